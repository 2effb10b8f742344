"""`invoke bench`: the figures the issues ask for, measured, never asserted.

- build from scratch (warm apt cache) against plain mmdebstrap of the same package set
- no-op rebuild
- sizes of the qcow2 disk and the OCI image
- the build of each Containerfile flavor on this one, the parent cached, with the time
  its own RUN steps took (they install packages: downloads and maintainer scripts)
- boot figures, from the caller's `boot_report` (the harness's vm.boot_check.report_boots:
  toolkit never imports vm)
"""

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from toolkit import paths
from toolkit.arch import Arch, host_arch, resolve_arches
from toolkit.build import build_image
from toolkit.buildah import added_steps
from toolkit.flavors import Flavor, flavor_names, load_flavor
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


# boot_report(flavor, arch, runs, log): boot the built image and log the figures
BootReport = Callable[[str, str, int, Callable[[str], None]], None]


def run_bench(
    flavor_name: str | None,
    arch_name: str | None,
    runs: int = 3,
    foreign_baseline: bool = False,
    log=print,
    boot_report: BootReport | None = None,
) -> None:
    """Build figures per arch, each followed by `boot_report`'s boot figures. The host must
    be set up (vm.hostcheck.ensure_host). `foreign_baseline`: also time plain mmdebstrap
    for a foreign arch (about 25 minutes for arm64 on a 2-core x86_64 host, all of it
    under qemu-user)."""
    flavor = load_flavor(flavor_name)
    arches = resolve_arches(arch_name, flavor.architectures)
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
        for derived in derivatives_of(flavor.name):
            report_derivative_build(derived, arch, repo, log)
        if boot_report is not None:
            boot_report(flavor.name, arch.name, runs, log)
    if {"x86_64", "aarch64"} <= scratch_by_arch.keys():
        log(
            f"\naarch64 build / x86_64 build: "
            f"{scratch_by_arch['aarch64'] / scratch_by_arch['x86_64']:.1f}x"
        )


def derivatives_of(parent: str) -> list[Flavor]:
    """The Containerfile flavors built FROM `parent` (images/web-appliance for the default)."""
    found = [load_flavor(name) for name in flavor_names()]
    return [f for f in found if f.containerfile is not None and f.parent == parent]


def report_derivative_build(flavor: Flavor, arch: Arch, repo, log=print) -> None:
    """Seconds to build a Containerfile flavor on its cached parent, and how much of it
    its RUN steps took (toolkit.derivative records each buildah step)."""
    if arch.name not in flavor.architectures:
        return
    build_image(flavor, arch, repo, log=quiet)  # the parent, and the derivative's downloads
    seconds, image = timed(build_image, flavor, arch, repo, log=quiet, force=True)
    steps = added_steps(image.added_layers)
    run_steps = sum(s["seconds"] for s in steps if s["step"].startswith("RUN "))
    log(f"\n{arch.name} build of the derivative {flavor.name} (parent cached)")
    log(f"  total                 {seconds:7.1f} s")
    log(f"  its RUN steps         {run_steps:7.1f} s")
    log(f"  the rest              {seconds - run_steps:7.1f} s")
    for stage in image.stages:
        log(f"    {stage.name:18}  {stage.seconds:7.1f} s")
    for step in steps:
        log(f"      {step['seconds']:6.1f} s  {step['step'][:70]}")
