"""`invoke bench`'s install figures: the installer ISO boots on a machine with a blank disk
and installs by itself (the NoCloud `install:` section, nobody typing), reboots, and the
clock stops at the first SSH login, which is on the installed disk. Where the time went
comes from the console: the live boot, `cos install --auto`'s own step lines, the reboot."""

import re
import secrets
import time
from collections.abc import Callable

from vm.images import installer_iso
from vm.machine import Machine, MachineOptions

INSTALL_TIMEOUT = 300  # KVM seconds, scaled by the harness
# Console lines whose time tells a phase: "[ 71.2] cos[..]: ..." kernel stamps of the live
# boot, and the install's "[  12.3 s] step" lines (seconds since `cos install` started).
KERNEL_STAMP = re.compile(r"\[\s*(\d+\.\d+)\]")
INSTALL_STEP = re.compile(r"\[\s*(\d+\.\d+) s\] (.*)$")
INSTALLED = re.compile(r"cOS installed in (\d+\.\d+) s")


def install_steps(console: str) -> list[tuple[float, str]]:
    """The install's timed steps as it printed them: (seconds since it started, line), the
    last one its total."""
    found = []
    for line in console.splitlines():
        match = INSTALL_STEP.search(line)
        if match and "done in" in match.group(2):
            found.append((float(match.group(1)), match.group(2).strip()))
        total = INSTALLED.search(line)
        if total:
            found.append((float(total.group(1)), "cOS installed"))
    return found


def live_install_start(console: str) -> float | None:
    """Kernel time of the live system when the unattended install began (the last stamp
    before the agent's name: terminal queries may come first on the same line)."""
    for line in console.splitlines():
        if "installing" in line and " to /dev/" in line and "cos[" in line:
            stamps = KERNEL_STAMP.findall(line.split("cos[")[0])
            if stamps:
                return float(stamps[-1])
    return None


def install_figures(flavor: str, arch: str) -> dict:
    options = MachineOptions(
        arch=arch,
        image=None,
        iso=installer_iso(flavor, arch),
        disk_size="8G",
        cloud_config={"install": {"device": "/dev/vda", "after": "reboot"}},
    )
    with Machine(f"bench-install-{secrets.token_hex(3)}", options) as machine:
        began = time.monotonic()
        machine.start(timeout=INSTALL_TIMEOUT)
        seconds = time.monotonic() - began
        booted = machine.succeed("cat /run/cos/boot")
        console = machine.console_path.read_text(errors="replace")
    if "label=COS_STATE" not in booted:
        raise RuntimeError(f"the first SSH login was not on the installed disk: {booted}")
    return {
        "seconds": seconds,
        "live_install_start": live_install_start(console),
        "steps": install_steps(console),
    }


def report_install(flavor: str, arch: str, log: Callable[[str], None] = print) -> None:
    figures = install_figures(flavor, arch)
    log(f"{arch} unattended install from the installer ISO")
    log(f"  ISO boot to SSH on the installed disk  {figures['seconds']:6.1f} s")
    start = figures["live_install_start"]
    if start is not None:
        log(f"  the live system starts cos install --auto at kernel time {start:.1f} s")
    for at, step in figures["steps"]:
        log(f"    [{at:6.1f} s] {step}")
    if start is not None and figures["steps"]:
        rest = figures["seconds"] - start - figures["steps"][-1][0]
        log(f"  the rest (ISO firmware and GRUB, the reboot, the disk's boot) {rest:.1f} s")
