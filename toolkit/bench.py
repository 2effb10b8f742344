"""`invoke bench`: the figures the issues ask for, measured, never asserted.

- build from scratch (warm apt cache) against plain mmdebstrap of the same package set
- no-op rebuild
- boot to SSH through firmware and GRUB, median of N, split by phase
- N machines at once against one after another
- sizes of the qcow2 disk and the OCI image
"""

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from toolkit import paths
from toolkit.arch import Arch, host_arch, resolve_arches
from toolkit.build import build_image
from toolkit.flavors import Flavor, load_flavor
from toolkit.hostsetup import ensure_host
from toolkit.packages import build_repository
from toolkit.rootfs import apt_cache_for, mmdebstrap_command
from toolkit.runner import run, system_env


def quiet(_line: str) -> None:
    pass


def timed(func, *args, **kwargs) -> tuple[float, object]:
    start = time.monotonic()
    result = func(*args, **kwargs)
    return time.monotonic() - start, result


def plain_mmdebstrap(flavor: Flavor, arch: Arch, repo) -> float:
    with tempfile.TemporaryDirectory(dir=paths.build_dir()) as tmp:
        target = Path(tmp) / "plain.tar"
        command = mmdebstrap_command(
            flavor,
            arch,
            repo.repo_dir,
            repo.keyring,
            target,
            apt_cache_for(flavor, arch),
            output_format="tar",
            accelerated=False,
        )
        seconds, _ = timed(run, command, what="plain mmdebstrap", env=system_env())
    return seconds


def boot_figures(flavor: str, arch: str, runs: int) -> dict[str, float]:
    from vm.boot_check import boot_and_check

    samples = [boot_and_check(flavor, arch, log=quiet) for _ in range(runs)]
    phases = sorted(
        {p for s in samples for p in s},
        key=lambda p: statistics.median(s[p] for s in samples if p in s),
    )
    return {p: statistics.median(s[p] for s in samples if p in s) for p in phases}


def parallel_boots(flavor: str, arch: str, count: int = 2) -> tuple[float, float]:
    from vm.boot_check import boot_and_check
    from vm.machine import default_vcpus

    serial, _ = timed(lambda: [boot_and_check(flavor, arch, log=quiet) for _ in range(count)])
    vcpus = default_vcpus(machines_at_once=count)  # as pytest -n COUNT gives each machine
    with ThreadPoolExecutor(count) as pool:
        together, _ = timed(
            lambda: list(
                pool.map(
                    lambda _i: boot_and_check(flavor, arch, vcpus=vcpus, log=quiet), range(count)
                )
            )
        )
    return serial, together


def run_bench(
    flavor_name: str | None,
    arch_name: str | None,
    runs: int = 3,
    foreign_baseline: bool = False,
    log=print,
) -> None:
    """`foreign_baseline`: also time plain mmdebstrap for a foreign arch (about 25 minutes
    for arm64 on a 2-core x86_64 host, all of it under qemu-user)."""
    flavor = load_flavor(flavor_name)
    arches = resolve_arches(arch_name, flavor.architectures)
    ensure_host(log=quiet)
    repo = build_repository(log=quiet)
    log(f"bench: {flavor.name}, {', '.join(a.name for a in arches)}, {runs} boots each")
    scratch_by_arch = {}
    for arch in arches:
        build_image(flavor, arch, repo, log=quiet)  # warm the apt cache: downloads excluded
        native = arch.name == host_arch()
        plain = plain_mmdebstrap(flavor, arch, repo) if native or foreign_baseline else None
        scratch, image = timed(build_image, flavor, arch, repo, log=quiet, force=True)
        noop, _ = timed(build_image, flavor, arch, repo, log=quiet)
        scratch_by_arch[arch.name] = scratch
        log(f"\n{arch.name} build")
        if plain is None:
            log("  plain mmdebstrap      (foreign arch: skipped, see --foreign-baseline)")
            log(f"  cOS build (scratch)   {scratch:7.1f} s")
        else:
            log(f"  plain mmdebstrap      {plain:7.1f} s")
            log(f"  cOS build (scratch)   {scratch:7.1f} s   ratio {scratch / plain:.2f}x")
        for stage in image.stages:
            log(f"    {stage.name:18}  {stage.seconds:7.1f} s")
        log(f"  no-op rebuild         {noop:7.1f} s")
        layer = sum(p.stat().st_size for p in (image.oci_layout / "blobs/sha256").iterdir())
        log(
            f"  sizes: qcow2 {image.disk_qcow2.stat().st_size / 1e6:.0f} MB, "
            f"OCI image {layer / 1e6:.0f} MB, raw disk {image.disk_raw.stat().st_size / 1e6:.0f} MB"
        )

        timings = boot_figures(flavor.name, arch.name, runs)
        log(f"{arch.name} boot (median of {runs}, seconds since domain start)")
        previous = 0.0
        for phase, at in timings.items():
            log(f"  {phase:14} at {at:6.1f} s  (+{at - previous:5.1f})")
            previous = at
        serial, together = parallel_boots(flavor.name, arch.name)
        log(f"  2 boots one after another {serial:6.1f} s, at once {together:6.1f} s")
    if {"x86_64", "aarch64"} <= scratch_by_arch.keys():
        log(
            f"\naarch64 build / x86_64 build: "
            f"{scratch_by_arch['aarch64'] / scratch_by_arch['x86_64']:.1f}x"
        )
