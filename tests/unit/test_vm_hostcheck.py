"""Host checks: a /dev/kvm libvirt cannot use, and QEMU's seccomp sandbox (with its fix)."""

from pathlib import Path

from vm.hostcheck import fix_seccomp, kvm_device_problem, seccomp_problem


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
    conf = tmp_path / "qemu.conf"
    conf.write_text('#seccomp_sandbox = 1\nuser = "root"\n')
    problem = seccomp_problem(conf)
    assert problem is not None and "seccomp_sandbox = 0" in problem
    assert fix_seccomp(conf) is True
    assert seccomp_problem(conf) is None
    assert fix_seccomp(conf) is False  # idempotent
    assert conf.read_text().startswith('#seccomp_sandbox = 1\nuser = "root"\n')
    assert seccomp_problem(tmp_path / "missing.conf") is None
