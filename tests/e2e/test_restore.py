"""Boot once, restore many, on real machines: machines restored from one saved state at
once are independent, and a restored machine reboots and power-cycles like a booted one."""

import threading
import time

import pytest

from vm.restore import saved_state

pytestmark = pytest.mark.vm


def backing_file(machine, disk: str = "disk.qcow2") -> str:
    import json
    import subprocess

    info = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(machine.workdir / disk)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(info)["backing-filename"]


def restored(machine_factory, vm_settings):
    """A machine restored from the saved state of its options, even under --no-restore."""
    m = machine_factory(start=False)
    m.start(restore=saved_state(m.options, uri=vm_settings.uri, accel=m.accel))
    assert m.restores == 1
    return m


def test_two_machines_restored_at_once_from_one_state_are_independent(
    machine_factory, vm_settings
) -> None:
    a = machine_factory(start=False)
    b = machine_factory(start=False)
    state = saved_state(a.options, uri=vm_settings.uri, accel=a.accel)
    errors: list[BaseException] = []

    def restore(m) -> None:
        try:
            m.start(restore=state)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=restore, args=(m,)) for m in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for m in (a, b):
        assert m.restores == 1 and len(m.boot_history) == 1
        assert "restore" in m.boot_history[0] and m.boot_history[0]["ssh"] > 0
        # Its own overlay on the saved disk, its own port and domain.
        assert backing_file(m) == str(state.folder / "disk.qcow2")
        assert m.succeed("hostname").strip() == m.hostname == state.hostname
        # The clock was set after the restore (it stood still while saved).
        assert abs(float(m.succeed("date -u +%s.%N")) - time.time()) < 30
    assert a.ssh_port != b.ssh_port and a.name != b.name
    assert a.boot_id == b.boot_id  # one boot, resumed twice

    a.succeed("echo only-a > /usr/local/restore-marker; echo only-a > /root/restore-marker; sync")
    b.succeed("echo only-b > /usr/local/restore-marker; sync")
    b.fail("test -e /root/restore-marker")
    assert a.succeed("cat /usr/local/restore-marker").strip() == "only-a"
    assert b.succeed("cat /usr/local/restore-marker").strip() == "only-b"
    # The saved disk itself is untouched: a third machine sees neither file.
    c = restored(machine_factory, vm_settings)
    c.fail("test -e /usr/local/restore-marker")


@pytest.mark.slow  # the fast run reboots and power-cycles restored machines in test_harness
def test_restored_machine_reboots_and_power_cycles_like_a_booted_one(
    machine_factory, vm_settings
) -> None:
    m = restored(machine_factory, vm_settings)
    machine_id = m.succeed("cat /etc/machine-id").strip()
    restored_boot = m.boot_id
    m.succeed("echo kept > /usr/local/cycle-marker; echo gone > /run/cycle-marker; sync")
    m.reboot()
    assert m.boot_id != restored_boot
    assert set(m.boot_history[1]) >= {"firmware", "kernel", "ssh"}  # a real boot this time
    m.fail("test -e /run/cycle-marker")
    assert m.succeed("cat /usr/local/cycle-marker").strip() == "kept"
    # The SMBIOS UUID of the saved machine is kept: systemd derives the same machine ID.
    assert m.succeed("cat /etc/machine-id").strip() == machine_id
    rebooted = m.boot_id
    m.power_cut()
    assert not m.is_running()
    m.start()
    assert m.boot_id not in (restored_boot, rebooted)
    assert m.succeed("cat /usr/local/cycle-marker").strip() == "kept"
    assert len(m.boot_history) == 3 and m.restores == 1


@pytest.mark.machine(boot=True)
def test_a_test_that_asks_for_a_boot_gets_one(machine) -> None:
    assert machine.restores == 0
    assert set(machine.boot_history[0]) >= {"firmware", "grub", "kernel", "systemd", "ssh"}
