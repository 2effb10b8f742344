"""Boot a built image and check it: `invoke build --boot`, and `invoke bench`'s boot and
restore figures (report_boots)."""

import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from vm.images import built_disk
from vm.machine import Machine, MachineOptions, default_vcpus


def boot_and_check(
    flavor: str,
    arch: str,
    *,
    uri: str | None = None,
    vcpus: int | None = None,
    cpu_model: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Boot the built disk, wait for SSH, pass the health gate, power off cleanly.

    Returns the boot timings (phase -> seconds since the domain started)."""
    options = MachineOptions(arch=arch, image=built_disk(flavor, arch), cpu_model=cpu_model)
    if vcpus:
        options.vcpus = vcpus
    name = f"check-{arch}-{secrets.token_hex(3)}"
    with Machine(name, options, uri=uri) as machine:
        log(f"booting {flavor} {arch} ({machine.accel.name}, timeouts x{machine.scale:g})")
        machine.start()
        timings = machine.boot_timings
        log("boot ok: " + ", ".join(f"{phase} {sec:.1f}s" for phase, sec in timings.items()))
        machine.shutdown()
    return timings


def quiet(_line: str) -> None:
    pass


def boot_figures(flavor: str, arch: str, runs: int) -> dict[str, float]:
    """Median seconds from domain start to each boot phase over `runs` boots, in order."""
    samples = [boot_and_check(flavor, arch, log=quiet) for _ in range(runs)]
    phases = sorted(
        {p for s in samples for p in s},
        key=lambda p: statistics.median(s[p] for s in samples if p in s),
    )
    return {p: statistics.median(s[p] for s in samples if p in s) for p in phases}


def parallel_boots(flavor: str, arch: str, count: int = 2) -> tuple[float, float]:
    """Seconds for `count` boots one after another, and for `count` boots at once."""

    def timed(func) -> float:
        start = time.monotonic()
        func()
        return time.monotonic() - start

    serial = timed(lambda: [boot_and_check(flavor, arch, log=quiet) for _ in range(count)])
    vcpus = default_vcpus(machines_at_once=count)  # as pytest -n COUNT gives each machine
    with ThreadPoolExecutor(count) as pool:
        together = timed(
            lambda: list(
                pool.map(
                    lambda _i: boot_and_check(flavor, arch, vcpus=vcpus, log=quiet), range(count)
                )
            )
        )
    return serial, together


def report_boots(flavor: str, arch: str, runs: int, log: Callable[[str], None] = print) -> None:
    """`invoke bench`'s boot figures: time to each phase (median), and two boots at once."""
    timings = boot_figures(flavor, arch, runs)
    log(f"{arch} boot (median of {runs}, seconds since domain start)")
    previous = 0.0
    for phase, at in timings.items():
        log(f"  {phase:14} at {at:6.1f} s  (+{at - previous:5.1f})")
        previous = at
    serial, together = parallel_boots(flavor, arch)
    log(f"  2 boots one after another {serial:6.1f} s, at once {together:6.1f} s")
    made_in, restores = restore_figures(flavor, arch, runs)
    log(f"{arch} restore from a saved state (the state was made in {made_in:.1f} s)")
    for phase in ("restore", "ssh"):
        values = [r[phase] for r in restores]
        log(
            f"  {phase:14} median {statistics.median(values):5.1f} s "
            f"(min {min(values):.1f}, max {max(values):.1f}, {len(values)} restores)"
        )


def restore_figures(flavor: str, arch: str, runs: int) -> tuple[float, list[dict[str, float]]]:
    """Seconds it took to make the saved state of a default machine (now, or by the run
    that made it), and for `runs` restores one after another plus two at once: to the
    resumed domain ("restore") and to SSH ("ssh"), from the moment it was asked for."""
    from vm.accel import choose_accel
    from vm.connection import default_uri
    from vm.restore import saved_state

    options = MachineOptions(arch=arch, image=built_disk(flavor, arch))
    state = saved_state(options, uri=default_uri(), accel=choose_accel(arch))

    def restore(_i: int) -> dict[str, float]:
        with Machine(f"bench-{arch}-{secrets.token_hex(3)}", options, uri=default_uri()) as m:
            m.start(restore=state)
            return {"restore": m.boot_history[0]["restore"], "ssh": m.boot_history[0]["ssh"]}

    results = [restore(i) for i in range(runs)]
    with ThreadPoolExecutor(2) as pool:
        results += list(pool.map(restore, range(2)))
    return state.made_in, results
