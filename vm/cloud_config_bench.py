"""`invoke bench`'s cloud-config figures: what the boot stage costs on the way to SSH with
the flavor's defaults, and with those plus a 20-step user-data, read from systemd's own
timestamps of the stage units (cos-setup-boot.service runs "boot" and "fs" before sshd;
cos-setup-rootfs.service runs "rootfs" and "initramfs" before sysinit.target)."""

import secrets
import statistics
from collections.abc import Callable

from vm.images import built_disk
from vm.machine import Machine, MachineOptions

UNITS = ("cos-setup-rootfs.service", "cos-setup-boot.service")


def twenty_steps() -> dict:
    """What a user brings: files, users, keys, hosts, environment, sysctl, directories and
    commands, twenty steps at the boot stage."""
    steps = []
    for index in range(20):
        kind = index % 5
        step: dict = {"name": f"step {index}"}
        if kind == 0:
            step["files"] = [{"path": f"/etc/bench/{index}.conf", "content": f"n={index}\n"}]
        elif kind == 1:
            step["users"] = {f"user{index}": {"groups": ["users"], "shell": "/bin/bash"}}
        elif kind == 2:
            step["hosts"] = {f"10.0.3.{index}": [f"host{index}"]}
            step["environment"] = {f"BENCH_{index}": str(index)}
        elif kind == 3:
            step["directories"] = [{"path": f"/srv/bench/{index}", "permissions": 0o755}]
            step["sysctl"] = {"vm.swappiness": 10 + index}
        else:
            step["commands"] = [f"echo {index} >> /run/bench-steps"]
        steps.append(step)
    return {"stages": {"boot": steps}}


def unit_seconds(machine: Machine, unit: str) -> float:
    shown = machine.succeed(
        f"systemctl show {unit} --value "
        "-p ExecMainStartTimestampMonotonic -p ExecMainExitTimestampMonotonic"
    ).split()
    start, end = (int(value) for value in shown)
    return (end - start) / 1e6


def stage_figures(flavor: str, arch: str, config: dict | None, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        options = MachineOptions(arch=arch, image=built_disk(flavor, arch), cloud_config=config)
        with Machine(f"bench-cc-{secrets.token_hex(3)}", options) as machine:
            machine.start()
            sample = {unit: unit_seconds(machine, unit) for unit in UNITS}
            sample["ssh"] = machine.boot_timings.get("ssh", 0.0)
            samples.append(sample)
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def report_cloud_config(flavor: str, arch: str, runs: int, log: Callable[[str], None] = print):
    defaults = stage_figures(flavor, arch, None, runs)
    loaded = stage_figures(flavor, arch, twenty_steps(), runs)
    log(f"{arch} cloud-config stages (median of {runs} boots; unit start to exit)")
    for unit in UNITS:
        log(f"  {unit:28} defaults {defaults[unit]:5.2f} s   +20 steps {loaded[unit]:5.2f} s")
    ssh = f"defaults {defaults['ssh']:5.1f} s   +20 steps {loaded['ssh']:5.1f} s"
    log(f"  {'boot to SSH':28} {ssh}")
