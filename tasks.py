"""invoke tasks of the cOS toolkit. Thin: each task parses arguments and calls toolkit/ or vm/."""

import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from toolkit.cli import guard
from toolkit.paths import REPO_ROOT


@task
@guard
def setup(c):
    """Install what the host needs (apt packages, aarch64 binfmt, libvirtd); idempotent."""
    from vm.hostcheck import ensure_host

    ensure_host()


@task
@guard
def packages(c):
    """Build packages/* into .debs and the signed apt repository (only what changed)."""
    from toolkit.packages import build_repository

    build_repository()


@task
@guard
def flavors(c):
    """List the flavors and their arches."""
    from toolkit.flavors import DEFAULT_FLAVOR, flavor_names, load_flavor

    for name in flavor_names():
        flavor = load_flavor(name)
        default = " (default)" if name == DEFAULT_FLAVOR else ""
        parent = f", from {flavor.parent}" if flavor.parent else ""
        print(
            f"{name:20} {flavor.suite:10} {', '.join(flavor.architectures):16} "
            f"{flavor.version}{parent}{default}"
        )


@task(
    help={
        "flavor": "flavor under images/ (default debian-trixie)",
        "arch": "x86_64, aarch64 or all (default: the host's)",
        "boot": "boot the built disk and wait for SSH",
        "image": "instead of a flavor: an OCI image holding the cOS packages (HOST/REPO:TAG, "
        "oci-archive:PATH or oci:DIR)",
    }
)
@guard
def build(c, flavor=None, arch=None, boot=False, image=None):
    """Build rootfs, OCI image, disk image for a flavor and arch (cached by inputs)."""
    from toolkit.build import build as build_images
    from toolkit.build import summary
    from vm.hostcheck import ensure_host

    ensure_host()
    if image is not None:
        from toolkit.fromimage import build_from_image

        if flavor is not None or boot:
            raise Exit("--image builds from the image: give no --flavor or --boot", code=2)
        print(summary(build_from_image(image, arch)))
        return
    images = build_images(flavor, arch)
    print(summary(images))
    if boot:
        from vm.boot_check import boot_and_check

        for image in images:
            boot_and_check(image.flavor.name, image.arch.name)


@task(help={"port": "127.0.0.1 port (default 5000)"})
@guard
def registry(c, port=5000):
    """Start the local OCI registry (Debian's docker-registry) on 127.0.0.1."""
    from toolkit.registry import start_registry

    print(start_registry(port=int(port)))


@task(
    help={
        "flavor": "flavor to push, or all",
        "arch": "x86_64, aarch64 or all",
        "port": "the local registry's port",
        "registry": "HOST[/NAMESPACE] of any registry instead of the local one; credentials "
        "from COS_REGISTRY_USER/COS_REGISTRY_PASSWORD, COS_REGISTRY_TOKEN, or the "
        "containers/docker auth files",
        "test-images": "also v2, unsigned, other-key, panic, unhealthy and hang variants",
        "image": "instead of a flavor: what `invoke build --image REF` made of REF",
    }
)
@guard
def push(c, flavor=None, arch=None, port=5000, registry=None, test_images=False, image=None):
    """Push built images (and a multi-arch index) to the local registry or to --registry,
    signed; with --test-images, also the upgrade scenarios' images (toolkit/testimages.py);
    with --image REF, the outputs of `invoke build --image REF`."""
    from toolkit.publish import destination, push_built_image, push_flavors
    from toolkit.registry import start_registry
    from vm.hostcheck import ensure_host

    if image is not None and (flavor is not None or test_images):
        raise Exit(
            "--image pushes what was built from the image: no --flavor or --test-images", code=2
        )
    address = destination(registry) if registry else None
    ensure_host()  # the build needs mmdebstrap, qemu-user, docker-registry, ...
    address = address or start_registry(port=int(port))
    if image is not None:
        push_built_image(image, arch, address, check_access=bool(registry))
        return
    # Credentials and the right to push are checked before the build, not after it.
    push_flavors(flavor, arch, address, test_images=test_images, check_access=bool(registry))


@task(
    help={
        "flavor": "flavor to test, or all (every flavor under images/)",
        "arch": "x86_64, aarch64 or all (default: host)",
        "unit": "unit tests only (no VM)",
        "k": "pytest -k expression",
        "workers": "pytest-xdist workers for the VM tests",
        "slow": "include slow scenarios",
        "repeat": "run the VM scenarios N times and print passes and failures per test",
    }
)
@guard
def test(c, flavor=None, arch=None, unit=False, k=None, workers=1, slow=False, repeat=1):
    """Run unit tests, then boot the built image and run the VM scenarios; ends with the
    machine timing summary (build/reports/summary.json)."""
    from toolkit.suite import run_tests
    from vm.hostcheck import ensure_host

    code = run_tests(
        flavor=flavor,
        arch=arch,
        unit_only=unit,
        keyword=k,
        workers=int(workers),
        slow=slow,
        prepare_host=lambda arches: ensure_host(arches=arches),
        repeat=int(repeat),
    )
    if code:
        raise Exit(code=code)


@task(
    help={
        "flavor": "flavor",
        "arch": "x86_64, aarch64 or all",
        "runs": "boots per arch",
        "foreign-baseline": "also time plain mmdebstrap of a foreign arch (about 25 min for arm64)",
    }
)
@guard
def bench(c, flavor=None, arch=None, runs=3, foreign_baseline=False):
    """Measure build time against plain mmdebstrap, boot time by phase, sizes, an upgrade
    (seconds to the switched slot and to SSH on it, bytes pulled) and an unattended install
    (seconds from the ISO's boot to SSH on the installed disk, by step)."""
    from toolkit.bench import quiet, run_bench
    from vm.boot_check import report_boots
    from vm.cloud_config_bench import report_cloud_config
    from vm.derivative_bench import report_derivatives
    from vm.hostcheck import ensure_host
    from vm.install_bench import report_install
    from vm.upgrade_bench import report_upgrade

    def machine_figures(flavor, arch, runs, log):
        report_boots(flavor, arch, runs, log)
        report_upgrade(flavor, arch, log)
        report_derivatives(flavor, arch, log)
        report_cloud_config(flavor, arch, runs, log)
        report_install(flavor, arch, log)

    ensure_host(log=quiet)
    run_bench(
        flavor, arch, runs=int(runs), foreign_baseline=foreign_baseline,
        boot_report=machine_figures,
    )  # fmt: skip


@task
@guard
def lint(c):
    """ruff (format check and lint) over the whole tree, packages/ included; actionlint
    and the GitHub workflow schema over .github/workflows (toolkit/workflowlint.py)."""
    from toolkit.workflowlint import lint_workflows

    bin_dir = Path(sys.executable).parent
    code = 0
    for args in (["format", "--check", "--diff"], ["check"]):
        command = [str(bin_dir / "ruff"), *args, str(REPO_ROOT)]
        print("$ " + " ".join(command), flush=True)
        code = code or subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
    code = lint_workflows(REPO_ROOT) or code
    if code:
        raise Exit(code=code)


@task
def clean(c):
    """Remove the build folder (the apt download cache outside the checkout stays)."""
    import shutil

    from toolkit.paths import build_dir

    shutil.rmtree(build_dir(), ignore_errors=True)
    print(f"removed {build_dir()}")


ns = Collection(setup, packages, flavors, build, registry, push, test, bench, lint, clean)
try:
    from vm.tasks import vm as vm_collection

    ns.add_collection(vm_collection, "vm")
except ImportError as exc:  # the harness is optional for building
    print(f"note: vm tasks unavailable: {exc}", file=sys.stderr)
