"""Boot a built image once and check it: `invoke build --boot` and `invoke bench` use it."""

import secrets
from collections.abc import Callable

from vm.images import built_disk
from vm.machine import Machine, MachineOptions


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
