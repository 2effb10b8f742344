"""The health gate after every boot: the console must show no panic, oops, emergency
shell, segfault or ordering cycle, and systemd must have settled in state "running": no
failed unit, no job still queued when the wait for startup ends."""

import re
import shlex

from vm.commands import GuestCommands
from vm.errors import HealthGateFailed

SETTLE_TIMEOUT = 30.0  # KVM seconds (scaled) for startup to finish after SSH answers

CONSOLE_PROBLEMS = re.compile(
    r"Kernel panic|\bOops\b|emergency mode|Emergency shell|Entering emergency|segfault at|"
    r"\bsegfault\b|BUG: kernel|general protection fault|"
    # systemd breaks a cycle by dropping a job: some unit silently never starts
    r"ordering cycle",
    re.IGNORECASE,
)

# The kernel died: nothing runs after this line.
KERNEL_DIED = re.compile(r"Kernel panic - not syncing")

# The firmware gave up, or the kernel died: waiting longer for SSH cannot help.
BOOT_DEAD_ENDS = re.compile(
    r"No bootable option or device was found|starting Boot\w+ \"EFI Internal Shell\"|Shell> |"
    rf"{KERNEL_DIED.pattern}|You are in emergency mode|Give root password for maintenance"
)

# UEFI's boot manager (OVMF and AAVMF): the firmware has done its work.
FIRMWARE_BOOT_MANAGER = re.compile(r"BdsDxe")

# The kernel's last words before a reset: a reboot, a panic's countdown, SysRq-b.
GUEST_RESET = re.compile(r"reboot: Restarting system|Rebooting in \d+ seconds|sysrq: Resetting")


# An int3 trap in kernel text that nobody set but the kernel's own live patcher
# (text_poke_bp, used for static keys and module loading). Under QEMU's multi-threaded TCG
# (7.2 here) a vCPU can still run a stale translation of the patched code after the
# patch is done, and the kernel dies on a breakpoint it no longer expects. An emulator
# race, not a fault of the image: seen about once in 30 boots on this 2-core host.
EMULATOR_PATCH_RACE = re.compile(r"Oops: int3\b")


def console_problems(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if CONSOLE_PROBLEMS.search(line)]


def failed_units(systemctl_output: str) -> list[str]:
    """Unit names from `systemctl --failed --no-legend --plain`."""
    units = []
    for line in systemctl_output.splitlines():
        fields = line.replace("●", " ").split()
        if fields:
            units.append(fields[0])
    return units


def check_health(guest: GuestCommands, console_text: str, boot_number: int) -> None:
    """Raise HealthGateFailed when this boot's console (`console_text`, read from where the
    boot began) or systemd shows a problem. Waits for startup to finish first, so a unit
    that fails late is caught; a startup that does not finish fails the gate too."""
    problems = console_problems(console_text)
    settle = int(guest.scaled(SETTLE_TIMEOUT))
    # `--wait` prints nothing when `timeout` ends it: ask again for the state it stopped in.
    state = guest.run(
        f"timeout {settle} systemctl is-system-running --wait >/dev/null; "
        "systemctl is-system-running",
        timeout=SETTLE_TIMEOUT + 30,
    ).stdout.strip()
    units = failed_units(guest.systemctl("--failed --no-legend --plain")[1])
    if not problems and not units and state == "running":
        return
    report = [
        f"{guest.name} failed the health gate after boot {boot_number} "
        f"(system state: {state or 'unknown'})"
    ]
    if problems:
        report += ["console:", *[f"  {line}" for line in problems[:20]]]
    if units:
        status = guest.systemctl(
            "status --no-pager --lines 15 " + " ".join(shlex.quote(u) for u in units)
        )[1]
        report += [f"failed units: {' '.join(units)}", status]
    if state != "running":
        jobs = guest.systemctl("list-jobs --no-pager")[1].strip()
        report += ["jobs still queued (systemctl list-jobs):", jobs or "(none)"]
    raise HealthGateFailed("\n".join(report))
