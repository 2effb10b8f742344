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
KERNEL_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]")
INSTALL_STEP = re.compile(r"\[\s*(\d+\.\d+) s\] (.*)$")


def install_steps(console: str) -> list[tuple[float, str]]:
    """The install's timed steps as it printed them: (seconds since it started, line)."""
    found = []
    for line in console.splitlines():
        match = INSTALL_STEP.search(line)
        if match and ("done in" in match.group(2) or "installed in" in match.group(2)):
            found.append((float(match.group(1)), match.group(2).strip()))
    return found


def live_install_start(console: str) -> float | None:
    """Kernel time of the live system when the unattended install began."""
    for line in console.splitlines():
        if "installing" in line and " to /dev/" in line:
            stamp = KERNEL_STAMP.search(line.split("cos[")[0].strip())
            if stamp:
                return float(stamp.group(1))
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
        last_boot = machine.boot_timings
    if "label=COS_STATE" not in booted:
        raise RuntimeError(f"the first SSH login was not on the installed disk: {booted}")
    return {
        "seconds": seconds,
        "live_install_start": live_install_start(console),
        "steps": install_steps(console),
        "installed_boot": last_boot,
    }


def report_install(flavor: str, arch: str, log: Callable[[str], None] = print) -> None:
    figures = install_figures(flavor, arch)
    log(f"{arch} unattended install from the installer ISO")
    log(f"  ISO boot to SSH on the installed disk  {figures['seconds']:6.1f} s")
    if figures["live_install_start"] is not None:
        log(
            f"  live system starts the install at kernel time {figures['live_install_start']:.1f} s"
        )
    for at, step in figures["steps"]:
        log(f"    [{at:6.1f} s] {step}")
    ssh = figures["installed_boot"].get("ssh")
    if ssh is not None:
        log(f"  the installed disk's boot, reset to SSH  {ssh:6.1f} s")
