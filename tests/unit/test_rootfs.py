"""The rootfs recipe: what runs under emulation and what the host does instead.
(The host-side CA store, which needs the built image's updater, is checked with the image
in tests/e2e/test_rootfs_image.py.)"""

from pathlib import Path

from toolkit.arch import get_arch
from toolkit.flavors import load_flavor
from toolkit.rootfs import mmdebstrap_command


def command(accelerated: bool) -> list[str]:
    return mmdebstrap_command(
        load_flavor("debian-trixie"),
        get_arch("aarch64"),
        Path("/repo"),
        Path("/repo/keyring.gpg"),
        Path("/target"),
        Path("/cache"),
        accelerated=accelerated,
    )


def test_plain_command_is_the_same_set_without_speedups():
    fast, plain = command(True), command(False)
    assert set(plain) < set(fast)
    extra = set(fast) - set(plain)
    assert "--aptopt=#clear DPkg::Pre-Install-Pkgs;" in extra
    assert any(a.startswith("--essential-hook=") and "dpkg-divert" in a for a in extra)
    assert [a for a in plain if a.startswith("--include=")] == [
        a for a in fast if a.startswith("--include=")
    ]
