"""The health gate's console scan and failed-unit parsing."""

from vm.health import BOOT_DEAD_ENDS, console_problems, failed_units

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
