"""The rootfs recipe: what runs under emulation and what the host does instead."""

import subprocess
from pathlib import Path

import pytest

from toolkit.arch import get_arch
from toolkit.build import image_folder
from toolkit.flavors import load_flavor
from toolkit.rootfs import mmdebstrap_command, run_deferred_tools


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


def test_ca_store_made_on_the_host_points_inside_the_image(tmp_path):
    updater = image_folder("debian-trixie", "x86_64") / "rootfs/usr/sbin/update-ca-certificates"
    if not updater.is_file():
        pytest.skip("needs the image's update-ca-certificates: run `invoke build` first")
    root = tmp_path / "root"
    certs = root / "usr/share/ca-certificates/test"
    certs.mkdir(parents=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=cos test root",
            "-days",
            "2",
            "-keyout",
            str(tmp_path / "key"),
            "-out",
            str(certs / "Test_Root.crt"),
        ],
        check=True,
        capture_output=True,
    )
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ca-certificates.conf").write_text("test/Test_Root.crt\n")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/update-ca-certificates").write_bytes(updater.read_bytes())

    run_deferred_tools(root, log=lambda *_: None)

    store = root / "etc/ssl/certs"
    assert (store / "Test_Root.pem").readlink() == Path(
        "/usr/share/ca-certificates/test/Test_Root.crt"
    )
    subject_hash = subprocess.run(
        ["openssl", "x509", "-noout", "-subject_hash", "-in", str(certs / "Test_Root.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert (store / f"{subject_hash}.0").readlink() == Path("Test_Root.pem")
    assert (store / "ca-certificates.crt").read_text() == (certs / "Test_Root.crt").read_text()
