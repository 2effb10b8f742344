"""pytest plugin of the VM harness (entry point `cos_vm`): options, fixtures, artifacts.

Fixtures: `machine` (a booted machine of --flavor/--arch, SSH ready), `machine_factory`
(make more, with options), `shared_machine` (one booted machine per test module),
`installer_machine` (the installer ISO with a blank disk),
`registry` (a local registry the guests reach at 10.0.2.100:5000), `vm_arch`, `vm_settings`.
Nothing here touches libvirt until a test asks for a machine, so unit tests stay light.

A machine of a built disk is restored from a saved running state of the same options
(vm/restore.py) unless the test asks for a real boot: `@pytest.mark.machine(boot=True)`.
The same marker declares a test's other needs (arches, memory, disks, no health gate).

Each test's boots, restores and saved states are recorded (vm/timing.py); the session ends
with a timing summary, also written as JSON with --timing-json.
"""

import contextlib
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from toolkit import paths
from toolkit.arch import ARCHES, get_arch, host_arch
from toolkit.errors import CosError

ARTIFACTS_ENV = "COS_ARTIFACTS_DIR"
_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()
_settings_key = pytest.StashKey["VmSettings"]()
_events_key = pytest.StashKey[int]()
_timings_key = pytest.StashKey[dict[str, dict[str, Any]]]()

# What @pytest.mark.machine(...) may declare: MachineOptions fields, and these.
MARKER_NEEDS = {"arches", "boot", "health_gate"}
MARKER_OPTIONS = {"memory_mib", "vcpus", "disk_size", "blank_disk", "cloud_config", "hostname"}


@dataclass(frozen=True)
class VmSettings:
    flavor: str
    arches: tuple[str, ...]
    uri: str
    keep: bool
    artifacts_dir: Path
    restore: bool = True  # machines of a built disk start from saved states


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cos-vm", "cOS VM harness")
    group.addoption("--flavor", default=None, help="flavor to boot (default debian-trixie)")
    group.addoption(
        "--arch", default=None, help="x86_64, aarch64 or all (default: the host's arch)"
    )
    group.addoption(
        "--libvirt-uri",
        default=None,
        help="libvirt URI of this host's hypervisor (default qemu:///system; another host's "
        "is refused: disks and console logs are local files, SSH goes to 127.0.0.1)",
    )
    group.addoption(
        "--keep-vms", action="store_true", help="leave the machines running after the tests"
    )
    group.addoption(
        "--no-restore",
        action="store_true",
        help="boot every machine instead of restoring saved running states",
    )
    group.addoption(
        "--timing-json",
        default=None,
        help="write each test's duration, boots, restores and boot phases to this file",
    )
    group.addoption(
        "--artifacts-dir",
        default=None,
        help="where failed tests leave logs (default build/artifacts)",
    )


def _arches(flavor: str, option: str | None) -> tuple[str, ...]:
    if option in (None, ""):
        return (host_arch(),)
    if option == "all":
        try:
            from toolkit.flavors import load_flavor

            return tuple(load_flavor(flavor).architectures)
        except CosError:
            return tuple(ARCHES)
    return (get_arch(option).name,)


def pytest_configure(config: pytest.Config) -> None:
    from toolkit.flavors import DEFAULT_FLAVOR
    from vm.connection import default_uri, remote_uri_problem

    # Declared in pyproject.toml too; here so the plugin works from any rootdir.
    config.addinivalue_line("markers", "vm: boots real QEMU machines through libvirt")
    config.addinivalue_line("markers", "slow: long scenario (several boots or an upgrade)")
    config.addinivalue_line(
        "markers",
        "machine(boot=False, health_gate=True, arches=None, **options): what the test's "
        "machines need: a real boot instead of a restore, no health gate, the arches it "
        "runs on, and MachineOptions such as memory_mib, blank_disk, disk_size",
    )
    config.stash[_timings_key] = {}
    config.pluginmanager.register(_Timings(config), "cos_vm_timings")
    flavor = config.getoption("--flavor") or os.environ.get("COS_FLAVOR") or DEFAULT_FLAVOR
    try:
        arches = _arches(flavor, config.getoption("--arch") or os.environ.get("COS_ARCH"))
    except CosError as exc:
        raise pytest.UsageError(str(exc)) from None
    uri = config.getoption("--libvirt-uri") or default_uri()
    problem = remote_uri_problem(uri)
    if problem:
        raise pytest.UsageError(problem)
    artifacts = config.getoption("--artifacts-dir") or os.environ.get(ARTIFACTS_ENV)
    config.stash[_settings_key] = VmSettings(
        flavor=flavor,
        arches=arches,
        uri=uri,
        keep=bool(config.getoption("--keep-vms")),
        artifacts_dir=Path(artifacts).resolve() if artifacts else paths.build_dir() / "artifacts",
        restore=not config.getoption("--no-restore") and os.environ.get("COS_VM_RESTORE") != "0",
    )


VM_FIXTURES = {"machine", "machine_factory", "installer_machine", "shared_machine"}


def machine_needs(node: pytest.Item | pytest.Collector | None) -> dict[str, Any]:
    """The needs declared with @pytest.mark.machine on a test, its class or its module
    (the closest wins); an unknown name is a usage error naming the test and the name."""
    marker = node.get_closest_marker("machine") if node is not None else None
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.machine takes names only")
    unknown = set(marker.kwargs) - MARKER_NEEDS - MARKER_OPTIONS
    if unknown:
        known = ", ".join(sorted(MARKER_NEEDS | MARKER_OPTIONS))
        raise pytest.UsageError(
            f"{node.nodeid}: @pytest.mark.machine does not know {', '.join(sorted(unknown))} "
            f"(known: {known})"
        )
    return dict(marker.kwargs)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that boots machines is a `vm` test even if its author forgot the mark; a
    test whose declared arches leave out the arch under test is skipped, saying so."""
    settings = config.stash[_settings_key]
    for item in items:
        if VM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.vm)
        arches = machine_needs(item).get("arches")
        if arches is not None:
            callspec = getattr(item, "callspec", None)
            arch = callspec.params.get("vm_arch") if callspec else None
            arch = arch or settings.arches[0]
            if arch not in arches:
                item.add_marker(
                    pytest.mark.skip(reason=f"needs {', '.join(arches)}; this run is {arch}")
                )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """--arch all runs each VM test once per arch."""
    arches = metafunc.config.stash[_settings_key].arches
    if "vm_arch" in metafunc.fixturenames and len(arches) > 1:
        # Module scope, so module-scoped machines can depend on the arch too.
        metafunc.parametrize("vm_arch", arches, scope="module")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    """Keep each phase's report on the item, so fixtures know in teardown if it failed;
    say whether a failure is the system's or the harness's; hand the test's machine
    events to the report (user_properties travel from xdist workers to the controller)."""
    from vm import timing
    from vm.errors import failure_kind

    report = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    if report.failed and call.excinfo is not None:
        report.user_properties.append(("failure_kind", failure_kind(call.excinfo.value)))
    if report.when == "teardown":
        events = timing.since(item.stash.get(_events_key, timing.mark()))
        report.user_properties.append(("vm_events", json.dumps(events)))
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from vm import timing

    item.stash[_events_key] = timing.mark()


class _Timings:
    """Collects each test's phases on the controller (or the only process)."""

    def __init__(self, config: pytest.Config):
        self.tests = config.stash[_timings_key]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(
            report.nodeid,
            {"test": report.nodeid, "duration": 0.0, "outcome": "passed", "events": []},
        )
        entry["duration"] = round(entry["duration"] + report.duration, 2)
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
        for name, value in report.user_properties:
            if name == "failure_kind" and report.failed:
                entry["failure_kind"] = value
            elif name == "vm_events" and report.when == "teardown":
                entry["events"] = json.loads(value)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from toolkit.testreport import summarize, summary_table

    if hasattr(config, "workerinput"):
        return  # the controller reports for every worker
    tests = list(config.stash[_timings_key].values())
    settings = config.stash[_settings_key]
    summary = summarize(
        tests, settings.flavor, settings.arches[0] if len(settings.arches) == 1 else ""
    )
    if any(t["events"] for t in tests):
        terminalreporter.write_sep("=", "machine timing")
        for line in summary_table(summary):
            terminalreporter.write_line(line)
    path = config.getoption("--timing-json")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary, indent=2) + "\n")


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_reports_key, {})
    return any(r.failed for r in reports.values())


# ----- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def vm_settings(pytestconfig: pytest.Config) -> VmSettings:
    return pytestconfig.stash[_settings_key]


@pytest.fixture(scope="session")
def vm_arch(vm_settings: VmSettings) -> str:
    """The arch under test (parametrized over all of them with --arch all)."""
    return vm_settings.arches[0]


@pytest.fixture(scope="session")
def vm_host(vm_settings: VmSettings) -> Iterator[VmSettings]:
    """Checks once per session that the host can run machines, and sweeps what dead runs
    left behind. Fails the test (not the session) with a clear message otherwise."""
    from vm.cleanup import clean_orphans
    from vm.connection import connect
    from vm.hostcheck import kvm_device_problem, seccomp_problem
    from vm.savedstate import prune as prune_states

    try:
        connect(vm_settings.uri)
    except CosError as exc:
        pytest.fail(str(exc), pytrace=False)
    for problem in (kvm_device_problem(), seccomp_problem()):
        if problem:
            warnings.warn(problem, stacklevel=1)
    with contextlib.suppress(CosError, OSError):
        clean_orphans(vm_settings.uri)
    with contextlib.suppress(OSError):
        prune_states()  # states of images that were rebuilt since
    yield vm_settings


@pytest.fixture(scope="session")
def registry_port() -> Iterator[int]:
    """The port the session's registry listens on; reserved up front because every
    machine's guest forward points at it."""
    from vm.ports import allocate_port

    lease = allocate_port()
    yield lease.port
    lease.release()


@pytest.fixture(scope="session")
def registry(registry_port: int) -> Iterator[str]:
    """A local registry for this session ("127.0.0.1:PORT"); guests use 10.0.2.100:5000."""
    from toolkit.registry import start_registry, stop_registry
    from vm.testrun import current_run

    storage = current_run().ensure_dir() / "registry"
    address = start_registry(storage, registry_port, log=lambda _msg: None)
    yield address
    with contextlib.suppress(Exception):
        stop_registry(storage, log=lambda _msg: None)
    shutil.rmtree(storage, ignore_errors=True)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


MachineFactory = Callable[..., Any]


class _Machines:
    """Makes machines for one fixture and cleans them up (keeping artifacts on failure)."""

    def __init__(
        self,
        settings: VmSettings,
        arch: str,
        registry_port: int | None,
        needs: dict[str, Any] | None = None,
        artifacts_name: str = "test",
    ):
        self.settings = settings
        self.artifacts_name = artifacts_name  # the test's or module's node id
        self.arch = arch
        self.registry_port = registry_port
        self.needs = needs or {}  # from @pytest.mark.machine
        self.made: list[Any] = []

    def make(
        self,
        *,
        flavor: str | None = None,
        arch: str | None = None,
        image: Path | str | None = "built",
        start: bool = True,
        wait: bool = True,
        timeout: float | None = None,
        boot: bool | None = None,
        health_gate: bool | None = None,
        **options: Any,
    ) -> Any:
        from vm.images import built_disk
        from vm.machine import Machine, MachineOptions
        from vm.restore import restorable, saved_state
        from vm.state import machines_dir, save

        needs = self.needs
        options = {k: v for k, v in needs.items() if k in MARKER_OPTIONS} | options
        boot = needs.get("boot", False) if boot is None else boot
        health_gate = needs.get("health_gate", True) if health_gate is None else health_gate
        settings = self.settings
        flavor = flavor or settings.flavor
        arch = arch or self.arch
        disk = built_disk(flavor, arch) if image == "built" else (Path(image) if image else None)
        if options.get("iso") is not None:
            options["iso"] = Path(options["iso"])
        opts = MachineOptions(
            arch=arch, image=disk, registry_port=self.registry_port, keep=settings.keep, **options
        )
        name = f"{_worker()}-{secrets.token_hex(3)}"
        # Kept machines live where `invoke vm.list/ssh/down` find them.
        workdir = machines_dir() / name if settings.keep else None
        machine = Machine(name, opts, uri=settings.uri, workdir=workdir)
        self.made.append(machine)
        if start:
            try:
                state = None
                if settings.restore and not boot and wait and restorable(opts):
                    state = saved_state(
                        opts, uri=settings.uri, accel=machine.accel, on_failure=self._keep_template
                    )
                machine.start(wait=wait, timeout=timeout, check_health=health_gate, restore=state)
            finally:
                if settings.keep and machine.is_running():
                    save(machine.kept_state(name, flavor))
        return machine

    def _keep_template(self, template: Any) -> None:
        """A template that failed to boot fails the test: its artifacts go with the test's."""
        from vm.artifacts import collect, safe_name

        collect(
            template, self.settings.artifacts_dir / safe_name(self.artifacts_name) / template.name
        )

    def finish(self, failed: bool, artifacts_name: str) -> Path | None:
        from vm.artifacts import collect, safe_name

        dest = None
        if failed and self.made:
            dest = self.settings.artifacts_dir / safe_name(artifacts_name)
            for machine in self.made:
                with contextlib.suppress(Exception):
                    collect(machine, dest / machine.name if len(self.made) > 1 else dest)
        for machine in self.made:
            if self.settings.keep and machine.is_running():
                print(f"\nkept {machine.name}: {' '.join(machine.ssh_command())}")
                machine.detach()
                continue
            machine.cleanup()
        return dest


@pytest.fixture
def machine_factory(
    request: pytest.FixtureRequest, vm_host: VmSettings, vm_arch: str, registry_port: int
) -> Iterator[MachineFactory]:
    """make(**options) -> a Machine, started unless start=False.

    Options: flavor, arch, image (a disk path, None for a blank system disk; default the
    built disk), iso, blank_disk ("4G"), disk_size, cloud_config (dict or "#cloud-config"
    text), hostname, memory_mib, vcpus, start (default True), wait (default True: SSH up
    and health gate passed), timeout (KVM seconds, scaled), boot (True: a real boot, not
    a restore from a saved state), health_gate (False: no health gate after the start).
    Defaults come from the test's @pytest.mark.machine.
    """
    # Only tests that use the registry get the guest forward to it.
    port = registry_port if "registry" in request.fixturenames else None
    machines = _Machines(vm_host, vm_arch, port, machine_needs(request.node), request.node.nodeid)
    try:
        yield machines.make
    finally:
        dest = machines.finish(_failed(request), request.node.nodeid)
        if dest is not None:
            request.node.user_properties.append(("artifacts", str(dest)))


@pytest.fixture(scope="module")
def shared_machine(
    request: pytest.FixtureRequest, vm_host: VmSettings, vm_arch: str, registry_port: int
) -> Iterator[Any]:
    """One booted machine for a whole module's read-only tests (saves a boot per test).
    Artifacts are kept under the module's name when any test of the module failed."""
    in_module = [i for i in request.session.items if i.nodeid.startswith(request.node.nodeid)]
    uses_registry = any("registry" in getattr(i, "fixturenames", ()) for i in in_module)
    needs = machine_needs(request.node)  # the module's marker
    machines = _Machines(
        vm_host, vm_arch, registry_port if uses_registry else None, needs, request.node.nodeid
    )
    failed_before = request.session.testsfailed
    try:
        machine = machines.make()
    except BaseException:
        # No test report exists yet when the boot itself fails: keep artifacts now.
        machines.finish(True, request.node.nodeid)
        raise
    try:
        yield machine
    finally:
        machines.finish(request.session.testsfailed > failed_before, request.node.nodeid)


@pytest.fixture
def machine(machine_factory: MachineFactory) -> Any:
    """A booted machine of --flavor/--arch: SSH answers and the health gate passed."""
    return machine_factory()


@pytest.fixture
def installer_machine(
    machine_factory: MachineFactory, vm_settings: VmSettings, vm_arch: str
) -> Any:
    """The installer ISO booted on a machine whose system disk (vda, 8 GiB) is blank.

    The blank disk comes first in the boot order, so after `cos install` a reboot boots the
    installed system with the ISO still attached. Waits for SSH (the live system reads the
    same cidata seed).
    """
    from vm.images import installer_iso

    return machine_factory(
        image=None, iso=installer_iso(vm_settings.flavor, vm_arch), disk_size="8G"
    )
