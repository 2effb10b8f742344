"""Firmware lookup, image paths, the harness key, overlays: the errors users read."""

import json
import subprocess
from pathlib import Path

import paramiko
import pytest

from toolkit.arch import get_arch
from vm import disks, images
from vm.errors import ImageNotBuilt, VmError
from vm.firmware import find_firmware
from vm.hostcheck import kvm_device_problem
from vm.sshkey import harness_key


@pytest.fixture(autouse=True)
def _build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))


def test_firmware_pairs_code_and_vars() -> None:
    arch = get_arch("x86_64")
    present = {arch.firmware_code[1], arch.firmware_vars[1]}  # only the 2M pair
    fw = find_firmware(arch, exists=lambda p: str(p) in present)
    assert (str(fw.code), str(fw.vars_template)) == (arch.firmware_code[1], arch.firmware_vars[1])
    # A 4M code image without its 4M vars is not mixed with the 2M vars.
    lonely = {arch.firmware_code[0], arch.firmware_vars[1]}
    with pytest.raises(VmError):
        find_firmware(arch, exists=lambda p: str(p) in lonely)


@pytest.mark.parametrize(("arch", "package"), [("x86_64", "ovmf"), ("aarch64", "qemu-efi-aarch64")])
def test_missing_firmware_names_paths_and_package(arch: str, package: str) -> None:
    with pytest.raises(VmError) as err:
        find_firmware(get_arch(arch), exists=lambda _p: False)
    message = str(err.value)
    assert get_arch(arch).firmware_code[0] in message and get_arch(arch).firmware_vars[0] in message
    assert f"apt-get install {package}" in message


def test_image_not_built_message(tmp_path: Path) -> None:
    with pytest.raises(ImageNotBuilt) as err:
        images.built_disk("debian-trixie", "aarch64")
    expected = tmp_path / "build/images/debian-trixie/aarch64/disk.qcow2"
    assert str(err.value) == (
        f"image not built: {expected}; run `invoke build --flavor debian-trixie --arch aarch64`"
    )
    with pytest.raises(ImageNotBuilt, match="installer.iso"):
        images.installer_iso("debian-trixie", "x86_64")


def test_built_disk_prefers_qcow2(tmp_path: Path) -> None:
    folder = images.image_dir("f", "x86_64")
    folder.mkdir(parents=True)
    (folder / "disk.raw").write_bytes(b"")
    assert images.built_disk("f", "x86_64").name == "disk.raw"
    (folder / "disk.qcow2").write_bytes(b"")
    assert images.built_disk("f", "x86_64").name == "disk.qcow2"


def test_harness_key_made_once_and_loadable() -> None:
    key = harness_key()
    assert key.public.startswith("ssh-ed25519 ")
    assert oct(key.private.stat().st_mode & 0o777) == "0o600"
    assert harness_key() == key
    loaded = paramiko.Ed25519Key.from_private_key_file(str(key.private))
    assert key.public.split()[1] == loaded.get_base64()


@pytest.mark.parametrize("base_format", ["raw", "qcow2"])
def test_overlay_points_at_built_image(tmp_path: Path, base_format: str) -> None:
    base = tmp_path / f"base.{base_format}"
    subprocess.run(["qemu-img", "create", "-q", "-f", base_format, str(base), "64M"], check=True)
    overlay = disks.create_overlay(base, tmp_path / "o.qcow2", "128M")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(overlay)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base.resolve())
    assert info["backing-filename-format"] == base_format
    assert info["virtual-size"] == 128 * 1024 * 1024


def test_overlay_of_missing_image(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="does not exist"):
        disks.create_overlay(tmp_path / "nope.qcow2", tmp_path / "o.qcow2")


def test_kvm_device_check(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    device.chmod(0o600)  # root only: libvirt-qemu cannot use it
    problem = kvm_device_problem(device, user="nobody")
    assert problem is not None and "chmod 0660" in problem
    device.chmod(0o666)
    assert kvm_device_problem(device, user="nobody") is None
    assert kvm_device_problem(tmp_path / "absent", user="nobody") is None


def test_seccomp_check_and_fix(tmp_path: Path) -> None:
    from vm.hostcheck import fix_seccomp, seccomp_problem

    conf = tmp_path / "qemu.conf"
    conf.write_text('#seccomp_sandbox = 1\nuser = "root"\n')
    problem = seccomp_problem(conf)
    assert problem is not None and "seccomp_sandbox = 0" in problem
    assert fix_seccomp(conf) is True
    assert seccomp_problem(conf) is None
    assert fix_seccomp(conf) is False  # idempotent
    assert conf.read_text().startswith('#seccomp_sandbox = 1\nuser = "root"\n')
    assert seccomp_problem(tmp_path / "missing.conf") is None
