"""The health gate: its console scan, failed-unit parsing, and the gate itself on a guest
whose systemd answers from a script."""

import pytest
from fake_guest import FakeGuest

from vm.errors import HealthGateFailed
from vm.health import BOOT_DEAD_ENDS, check_health, console_problems, failed_units

CONSOLE = """\
[    1.0] Linux version 6.12.0
[    2.0] Kernel command line: root=LABEL=COS_STATE console=ttyS0 panic=5
[    3.0] myprog[123]: segfault at 0 ip 000055 sp 00007f error 4
[  OK  ] Started ssh.service - OpenBSD Secure Shell server.
[    9.0] Oops: general protection fault, probably for non-canonical address
You are in emergency mode. After logging in, type "journalctl -xb" to view
[    4.0] systemd[1]: ssh.service: Found ordering cycle on network-online.target/start
"""


def test_console_problems() -> None:
    problems = console_problems(CONSOLE)
    assert len(problems) == 4
    assert problems[0].startswith("[    3.0] myprog[123]: segfault")
    assert "Oops" in problems[1]
    assert problems[2].startswith("You are in emergency mode")
    assert "Found ordering cycle on network-online.target" in problems[3]
    assert console_problems("[  OK  ] Reached target multi-user.target\npanic=5 in cmdline\n") == []


def test_failed_units() -> None:
    out = "● foo.service loaded failed failed Foo\nbar.mount   loaded failed failed Bar\n\n"
    assert failed_units(out) == ["foo.service", "bar.mount"]
    assert failed_units("") == []


def test_dead_ends() -> None:
    assert BOOT_DEAD_ENDS.search('BdsDxe: starting Boot0002 "EFI Internal Shell" from Fv(1)')
    assert BOOT_DEAD_ENDS.search("Kernel panic - not syncing: VFS: Unable to mount root fs")
    assert BOOT_DEAD_ENDS.search("BdsDxe: No bootable option or device was found.")
    assert not BOOT_DEAD_ENDS.search('BdsDxe: starting Boot0001 "UEFI Misc Device" from Pci')


JOBS = "JOB UNIT          TYPE  STATE\n 71 slow.service  start running\n\n1 jobs listed.\n"


def systemd(state: str, failed: str = "") -> FakeGuest:
    """A guest whose startup ended in `state`, with `failed` units and one queued job."""

    def answer(command: str) -> tuple[int, str]:
        if "is-system-running" in command:
            return (0 if state == "running" else 1), f"{state}\n"
        if command.startswith("systemctl --failed"):
            return 0, failed
        if command.startswith("systemctl list-jobs"):
            return 0, JOBS
        if command.startswith("systemctl status"):
            return 3, "× foo.service - Foo\n     Active: failed\n"
        return 0, ""

    return FakeGuest(answer)


def test_gate_passes_a_boot_that_settled() -> None:
    guest = systemd("running")
    check_health(guest, "[  OK  ] Reached target multi-user.target\n", 1)
    # One wait for startup to finish (30 KVM seconds, scaled), then its state.
    assert guest.commands[0] == (
        "timeout 30 systemctl is-system-running --wait >/dev/null; systemctl is-system-running"
    )


def test_gate_fails_a_boot_that_does_not_settle() -> None:
    guest = systemd("starting")
    guest.scale = 4.0
    with pytest.raises(HealthGateFailed) as err:
        check_health(guest, "", 2)
    message = str(err.value)
    assert message.startswith(
        "cos-test-fake failed the health gate after boot 2 (system state: starting)"
    )
    assert "jobs still queued (systemctl list-jobs):\nJOB UNIT" in message
    assert "71 slow.service  start running" in message
    assert guest.commands[0].startswith("timeout 120 systemctl is-system-running --wait")


def test_gate_fails_failed_units_and_console_problems() -> None:
    with pytest.raises(HealthGateFailed) as err:
        check_health(systemd("degraded", "● foo.service loaded failed failed Foo\n"), "", 1)
    message = str(err.value)
    assert "(system state: degraded)" in message
    assert "failed units: foo.service\n× foo.service - Foo" in message
    with pytest.raises(HealthGateFailed, match=r"console:\n  \[    3.0\] myprog\[123\]: segfault"):
        check_health(systemd("running"), CONSOLE, 1)
