"""The host-side finishing of the rootfs, checked with the built image's own tools: the CA
store that update-ca-certificates (deferred out of mmdebstrap, see toolkit.rootfs) makes
on the host points inside the image."""

import subprocess
from pathlib import Path

import pytest

from toolkit.build import image_folder
from toolkit.rootfs import run_deferred_tools

pytestmark = pytest.mark.image


def test_ca_store_made_on_the_host_points_inside_the_image(tmp_path, vm_settings, vm_arch):
    folder = image_folder(vm_settings.flavor, vm_arch)
    updater = folder / "rootfs/usr/sbin/update-ca-certificates"
    if not updater.is_file():
        pytest.fail(
            f"image not built: {updater} is missing; run `invoke build --flavor "
            f"{vm_settings.flavor} --arch {vm_arch}`"
        )
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
