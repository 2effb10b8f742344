"""Build failures read as messages: a missing tool, a failing tool, too little disk,
a bad flavor or arch named before anything runs."""

import pytest

from toolkit import build
from toolkit.arch import resolve_arches
from toolkit.errors import CosError
from toolkit.runner import run


def test_missing_tool_says_how_to_install():
    with pytest.raises(CosError, match=r"mksquashfs-nope.*not found; run `invoke setup`"):
        run(["mksquashfs-nope", "x"], what="mksquashfs")


def test_failing_tool_shows_its_last_output():
    with pytest.raises(CosError) as info:
        run(
            ["sh", "-c", "echo I: working; echo E: the mirror is down >&2; exit 3"],
            what="mmdebstrap trixie/amd64",
        )
    message = str(info.value)
    assert "mmdebstrap trixie/amd64 failed (exit 3)" in message
    assert "E: the mirror is down" in message


def test_too_little_disk_names_folder_and_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "MIN_FREE_BYTES", 1 << 60)
    with pytest.raises(CosError, match=rf"{tmp_path}: only \d+ MiB free; a build needs \d+ MiB"):
        build.check_free_space(tmp_path)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(CosError, match=r"unknown arch 'riscv64'; valid: x86_64, aarch64"):
        resolve_arches("riscv64")
    with pytest.raises(CosError, match=r"not built by this flavor; valid: x86_64"):
        resolve_arches("aarch64", ["x86_64"])


def test_unknown_flavor_fails_before_any_work():
    with pytest.raises(CosError, match=r"unknown flavor 'nope'; valid flavors: .*debian-trixie"):
        build.build("nope", None, log=lambda _m: None)
