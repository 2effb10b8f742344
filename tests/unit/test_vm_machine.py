"""A Machine's files and domain before any boot: overlay, seed, firmware copy, XML,
timeouts scaled by the acceleration."""

import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from toolkit.arch import host_arch
from vm.accel import Accel
from vm.domain import domain_xml
from vm.errors import GuestUnreachable, HealthGateFailed, ImageNotBuilt, WaitTimedOut
from vm.machine import Machine, MachineOptions
from vm.ports import allocate_port
from vm.ssh import CommandResult
from vm.supervisor import FIRMWARE_TIMEOUT


@pytest.fixture(autouse=True)
def _build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.delenv("COS_VM_TIMEOUT_SCALE", raising=False)


def base_image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "32M"], check=True)
    return path


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_prepare_makes_files_and_valid_xml(tmp_path: Path, arch: str) -> None:
    if shutil.which("xorriso") is None or shutil.which("virt-xml-validate") is None:
        pytest.skip("xorriso and virt-xml-validate are needed")
    firmware = {"x86_64": "/usr/share/OVMF", "aarch64": "/usr/share/AAVMF"}[arch]
    if not Path(firmware).is_dir():
        pytest.skip(f"{firmware} missing")
    iso = tmp_path / "installer.iso"
    iso.write_bytes(b"")
    options = MachineOptions(
        arch=arch, image=base_image(tmp_path), blank_disk="16M", iso=iso, registry_port=25001
    )
    m = Machine("unit_Test", options, accel=Accel("tcg", "test"))
    try:
        assert m.name == "cos-test-unit_Test"
        assert m.hostname == "cos-test-unit-test"  # valid as a hostname
        m.prepare()
        names = sorted(p.name for p in m.workdir.iterdir())
        assert names == ["data.qcow2", "disk.base.raw", "disk.qcow2", "efivars.fd", "seed.iso"]
        m._port = allocate_port()
        xml = domain_xml(m._spec())
        path = tmp_path / "d.xml"
        path.write_text(xml)
        subprocess.run(["virt-xml-validate", str(path), "domain"], check=True, capture_output=True)
        root = ET.fromstring(xml)
        targets = [d.find("target").get("dev") for d in root.iter("disk")]  # type: ignore[union-attr]
        assert targets == ["vda", "vdb", "vdc", "sda"]
    finally:
        m.cleanup()
    assert not m.workdir.exists()


def test_timeouts_scale_with_acceleration(tmp_path: Path) -> None:
    tcg = Machine("t1", MachineOptions(arch=host_arch()), accel=Accel("tcg", "test"))
    kvm = Machine("t2", MachineOptions(arch=host_arch()), accel=Accel("kvm", "test"))
    foreign = "aarch64" if host_arch() == "x86_64" else "x86_64"
    emulated = Machine("t3", MachineOptions(arch=foreign), accel=Accel("tcg", "test"))
    assert (kvm.scaled(60), tcg.scaled(60), emulated.scaled(60)) == (60, 240, 480)
    for m in (tcg, kvm, emulated):
        m.cleanup()


def test_not_running_machine(tmp_path: Path) -> None:
    m = Machine("idle", MachineOptions(), accel=Accel("tcg", "test"))
    assert not m.is_running()
    assert m.boot_timings == {}
    with pytest.raises(GuestUnreachable, match="not running"):
        m.succeed("true")
    m.shutdown()  # nothing to do
    m.power_cut()
    m.cleanup()
    m.cleanup()  # idempotent


def test_missing_image_is_reported_before_libvirt(tmp_path: Path) -> None:
    from vm.images import built_disk

    with pytest.raises(ImageNotBuilt, match="run `invoke build --flavor debian-trixie"):
        Machine("x", MachineOptions(image=built_disk("debian-trixie", host_arch())))


def test_vcpus_never_oversubscribe_the_host(monkeypatch):
    from vm.machine import default_vcpus

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_vcpus(1) == 2
    assert default_vcpus(2) == 1
    assert default_vcpus(8) == 1
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert default_vcpus() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_vcpus() == 2


PATCH_RACE_CONSOLE = """\
[    5.236052] Modules linked in: nfnetlink efivarfs qemu_fw_cfg virtio_rng ip_tables
[    5.236425] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI
[    5.236492] RIP: 0010:kfree+0xa0/0x350
[    5.236664] Kernel panic - not syncing: Fatal exception in interrupt
"""


def test_only_a_first_tcg_boot_killed_by_the_patch_race_is_repeated(tmp_path: Path) -> None:
    m = Machine("race", MachineOptions(arch=host_arch()), accel=Accel("tcg", "test"))
    m.console.path.parent.mkdir(parents=True, exist_ok=True)
    m.console.path.write_text("[    4.1] Run /init as init process\n")
    assert not m._boot.hit_emulator_patch_race()  # any other dead boot is the image's fault
    m.console.path.write_text(PATCH_RACE_CONSOLE)
    assert m._boot.hit_emulator_patch_race()
    assert "live code patching" in m._boot.repeatable_death()
    m._boot.emulator_retries = 1
    assert not m._boot.hit_emulator_patch_race()  # once only
    m._boot.emulator_retries = 0
    m.boot_history.append({"ssh": 20.0})
    assert not m._boot.hit_emulator_patch_race()  # a later boot carries a scenario's state
    kvm = Machine("race-kvm", MachineOptions(arch=host_arch()), accel=Accel("kvm", "test"))
    kvm.console.path.parent.mkdir(parents=True, exist_ok=True)
    kvm.console.path.write_text(PATCH_RACE_CONSOLE)
    assert not kvm._boot.hit_emulator_patch_race()  # a real CPU has no such race
    m.cleanup()
    kvm.cleanup()


RESTORE_PANIC_CONSOLE = """\
[   12.765143]  virtnet_config_changed_work+0x14b/0x180 [virtio_net]
[   12.765143] RIP: 0010:net_rx_action+0xef/0x420
[   12.765143] Kernel panic - not syncing: Fatal exception in interrupt
"""


def test_only_a_restore_whose_kernel_died_before_ssh_is_repeated(tmp_path: Path) -> None:
    m = Machine("resumed", MachineOptions(arch=host_arch()), accel=Accel("tcg", "test"))
    m.console.path.parent.mkdir(parents=True, exist_ok=True)
    m.console.path.write_text("[   12.7] systemd[1]: Reached target multi-user.target\n")
    m._boot.new_instance(restored=True)
    m.console.path.write_text(m.console.path.read_text() + RESTORE_PANIC_CONSOLE)
    assert m._boot.restored_kernel_died()
    m._boot.new_instance()  # the harness's cold start after the panic's countdown
    assert m._boot.restored_kernel_died()  # still the restore that died
    assert m._boot.repeatable_death() == "the guest's kernel died right after it was restored"
    m._boot.emulator_retries = 1
    assert not m._boot.restored_kernel_died()  # once only
    m._boot.emulator_retries = 0
    m.boot_history.append({"ssh": 1.0})
    assert not m._boot.restored_kernel_died()  # it answered: a test has run in it since
    booted = Machine("booted", MachineOptions(arch=host_arch()), accel=Accel("tcg", "test"))
    booted.console.path.parent.mkdir(parents=True, exist_ok=True)
    booted.console.path.write_text(RESTORE_PANIC_CONSOLE)
    booted._boot.new_instance()
    booted._boot.instance_offset = booted._boot.boot_offset = 0
    assert not booted._boot.restored_kernel_died()  # a booted kernel that dies is the image's
    assert booted._boot.repeatable_death() is None
    m.cleanup()
    booted.cleanup()


def test_a_restore_whose_kernel_died_is_restored_once_more_from_fresh_files(monkeypatch):
    """start(restore=...) after a dead resume: one warning, one more restore, the dead
    attempt's console kept beside the new one."""
    m = Machine("again", MachineOptions(arch=host_arch()), accel=Accel("tcg", "test"))
    m.console.path.parent.mkdir(parents=True, exist_ok=True)
    m.console.path.write_text("[   12.7] systemd[1]: Reached target multi-user.target\n")
    attempts = []

    def restore_from_state(state, timeout, check_health):
        attempts.append(m._prepared)
        m._boot.new_instance(restored=True)
        if len(attempts) == 1:
            m.console.path.write_text(m.console.path.read_text() + RESTORE_PANIC_CONSOLE)
            raise GuestUnreachable(f"{m.name} cannot boot: Kernel panic")
        m._boot.end_boot()

    monkeypatch.setattr(m, "_restore_from_state", restore_from_state)
    with pytest.warns(UserWarning, match="died right after it was restored; starting it again"):
        m.start(restore=object())
    assert len(attempts) == 2 and m.emulator_retries == 1
    assert "Kernel panic" in (m.workdir / "console.died.log").read_text()
    m.cleanup()


class FakeDomain:
    def __init__(self, active: bool):
        self.active = active

    def isActive(self) -> bool:
        return self.active

    def destroy(self) -> None:
        self.active = False

    def XMLDesc(self) -> str:
        return "<domain id='live'/>"


@pytest.fixture
def created_domains(monkeypatch) -> list[str]:
    """The XML of every domain the harness creates, through a fake libvirt connection."""
    created: list[str] = []

    class FakeConnection:
        def createXML(self, xml: str, flags: int) -> FakeDomain:
            created.append(xml)
            return FakeDomain(True)

    monkeypatch.setattr("vm.machine.connect", lambda uri=None: FakeConnection())
    return created


def machine_with_console(name: str, console: str, running: bool, keep: bool = False) -> Machine:
    m = Machine(name, MachineOptions(arch=host_arch(), keep=keep), accel=Accel("tcg", "test"))
    m.console.path.parent.mkdir(parents=True, exist_ok=True)
    m.console.path.write_text(console)
    m._xml, m._domain = "<domain/>", FakeDomain(running)
    return m


def test_checks_only_report_and_supervise_starts_a_reset_guest_again(
    created_domains: list[str],
) -> None:
    m = machine_with_console("cold", "[   30.1] reboot: Power down\n", running=False)
    assert not m.supervise() and created_domains == []  # a power-off stays off
    with m.console.path.open("a") as console:
        console.write("BdsDxe: loading Boot0001\n[   40.2] reboot: Restarting system\n")
    m._boot.instance_offset = len("[   30.1] reboot: Power down\n")
    # Reading the state (as artifact collection does) starts nothing.
    assert not m.is_running() and m.domain_xml() == "<domain/>" and created_domains == []
    assert m.supervise() and created_domains == ["<domain/>"]  # a fresh QEMU, same domain
    assert m.is_running() and m.domain_xml() == "<domain id='live'/>"
    m._domain = FakeDomain(False)
    with m.console.path.open("a") as console:
        console.write("BdsDxe: loading Boot0001\n[    9.0] reboot: Power down\n")
    assert not m.supervise() and len(created_domains) == 1  # the new process powered off
    assert "on_reboot>destroy<" in domain_xml(_spec_with_port(m))

    kept = machine_with_console("kept", "[ 40.2] reboot: Restarting system\n", False, keep=True)
    assert not kept.supervise() and len(created_domains) == 1  # libvirt resets kept ones
    assert "on_reboot>restart<" in domain_xml(_spec_with_port(kept))
    for machine in (m, kept):
        machine.cleanup()


def test_a_wait_loop_starts_a_reset_guest_again(created_domains: list[str]) -> None:
    m = machine_with_console("wait", "[   40.2] reboot: Restarting system\n", running=False)
    with pytest.raises(WaitTimedOut, match="did not show"):  # not "machine stopped"
        m.wait_for_console("never printed", timeout=0.1)
    assert created_domains == ["<domain/>"] and m.is_running()
    m.cleanup()


def _spec_with_port(m: Machine):
    m._port = allocate_port()
    return m._spec()


def test_a_firmware_that_prints_nothing_is_power_cycled_once(created_domains: list[str]) -> None:
    m = machine_with_console("stall", "", running=True)
    m._boot.instance_started = time.monotonic()
    assert m.supervise() and m._boot_failure(fail_fast=True) == []  # still within its time
    m._boot.instance_started -= m.scaled(FIRMWARE_TIMEOUT) + 1
    assert m.is_running() and created_domains == []  # the check alone does nothing
    with pytest.warns(UserWarning, match="printed nothing"):
        assert m._boot_failure(fail_fast=True) == []
    assert created_domains == ["<domain/>"] and m.firmware_restarts == 1
    m.console.path.write_text("BdsDxe: loading Boot0001\n")
    m._boot.instance_started -= m.scaled(FIRMWARE_TIMEOUT) + 1
    assert m._boot_failure(fail_fast=True) == []  # it spoke: nothing to do
    m.console.path.write_text("")
    m._boot.instance_offset = 0
    assert "printed nothing" in m._boot_failure(fail_fast=True)[0]  # a second stall fails
    assert len(created_domains) == 1
    m.cleanup()


def test_health_gate_fails_a_boot_that_does_not_settle(monkeypatch) -> None:
    """`systemctl is-system-running --wait` ended by its timeout with a job still
    queued: the gate fails with the state and the queued jobs."""
    m = Machine("settle", MachineOptions(arch=host_arch()), accel=Accel("tcg", "test"))
    asked: list[str] = []

    def run(command: str, timeout: float | None = None) -> CommandResult:
        asked.append(command)
        if "is-system-running" in command:
            return CommandResult(command, 1, "starting\n", "")
        if "list-jobs" in command:
            return CommandResult(
                command, 0, "JOB UNIT TYPE STATE\n42 slow.service start running\n", ""
            )
        return CommandResult(command, 0, "", "")  # no failed unit

    monkeypatch.setattr(m, "run", run)
    with pytest.raises(HealthGateFailed) as err:
        m.check_health()
    assert "system state: starting" in str(err.value)
    assert "42 slow.service start running" in str(err.value)
    assert any(c.startswith("timeout 120 systemctl is-system-running --wait") for c in asked)
    m.cleanup()
