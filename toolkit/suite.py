"""`invoke test`: the unit suite, then for each arch the image is built and the VM suite
(scenarios marked `vm`, and `image` tests that need the built image) runs against it.

A suite that runs no test fails the run and says so (a marker selection that deselects
every scenario, an empty folder): a green run always means tests ran and passed. With
`-k`, which narrows the run on purpose, a suite may match nothing as long as another
suite ran what the expression matched; a `-k` that matches nothing at all fails.

Every run ends with the machine timing summary of its VM suites, also written to
build/reports/summary.json. With `repeat`, the VM suites run that many times (no test is
ever rerun on its own: a failure counts) and a table says, per test, how often it passed
and failed; each run keeps its failures' artifacts in build/artifacts/run-N/.
"""

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from toolkit import paths
from toolkit.arch import resolve_arches
from toolkit.errors import CosError
from toolkit.flavors import flavor_names, load_flavor
from toolkit.testreport import flake_table, junit_outcomes, merge, summary_table

NO_TESTS = 5  # pytest's exit code when it collected or selected no test

# prepare_host(arches): what the host needs to build and boot them (vm.hostcheck.ensure_host)
PrepareHost = Callable[[tuple[str, ...]], None]
# build(flavor, arch): the image the VM suite runs against (toolkit.build.build)
BuildImage = Callable[[str, str], object]


def pytest(args: list[str], root: Path) -> int:
    command = [sys.executable, "-m", "pytest", *args]
    print("$ " + shlex.join(command), flush=True)
    return subprocess.run(command, cwd=root, check=False).returncode


def _build(flavor: str, arch: str) -> object:
    from toolkit.build import build

    return build(flavor, arch)


def run_tests(
    flavor: str | None,
    arch: str | None,
    unit_only: bool,
    keyword: str | None,
    workers: int,
    slow: bool,
    *,
    prepare_host: PrepareHost,
    build: BuildImage = _build,
    root: Path | None = None,
    log: Callable[[str], None] = print,
    repeat: int = 1,
) -> int:
    """0 when every suite ran tests and they passed; otherwise the first failing suite's
    pytest exit code, or NO_TESTS when the only fault is a suite that ran nothing.
    A failing unit suite stops the run before any image is built."""
    if repeat < 1:
        raise CosError(f"--repeat must be 1 or more, not {repeat}")
    root = paths.REPO_ROOT if root is None else root
    # 'all' means every flavor; bad flavor or arch names fail before anything runs.
    names = flavor_names() if flavor == "all" else [flavor]
    targets = [
        (f, a) for f in map(load_flavor, names) for a in resolve_arches(arch, f.architectures)
    ]
    reports = paths.build_dir() / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    selection = ["-k", keyword] if keyword else []
    # Unit tests use the real tools too (apt, gpg, mkfs, skopeo, grub-editenv, ...).
    prepare_host(tuple(dict.fromkeys(a.name for _, a in targets)))
    unit_args = ["tests/unit", "-q", "--timeout=300", f"--junitxml={reports}/unit.xml"]
    results = [("the unit suite", unit_args + selection, pytest(unit_args + selection, root))]
    if unit_only or results[0][2] not in (0, NO_TESTS):
        return _verdict(results, log)
    marks = "vm or image" if slow else "(vm or image) and not slow"
    timings: list[Path] = []
    junits: list[list[Path]] = []
    for number in range(1, repeat + 1):
        run_dir = reports if repeat == 1 else reports / f"run-{number}"
        run_dir.mkdir(parents=True, exist_ok=True)
        junits.append([])
        for flavor_obj, a in targets:
            if number == 1:
                build(flavor_obj.name, a.name)
            suffix = f"{flavor_obj.name}-{a.name}"
            timing, junit = run_dir / f"timing-{suffix}.json", run_dir / f"e2e-{suffix}.xml"
            for stale in (timing, junit):
                stale.unlink(missing_ok=True)  # never report an earlier run's results
            args = [
                "tests/e2e",
                "-m",
                marks,
                f"--flavor={flavor_obj.name}",
                f"--arch={a.name}",
                f"--junitxml={junit}",
                f"--timing-json={timing}",
                "-v",
                *selection,
            ]
            if repeat > 1:
                args.append(f"--artifacts-dir={paths.build_dir() / 'artifacts' / f'run-{number}'}")
            if workers > 1:
                args += ["-n", str(workers)]
            run_note = f", run {number}" if repeat > 1 else ""
            name = f"the VM suite ({flavor_obj.name}, {a.name}{run_note})"
            results.append((name, args, pytest(args, root)))
            timings.append(timing)
            junits[-1].append(junit)
    _summary(timings, reports / "summary.json", log)
    if repeat > 1:
        _flakes(junits, reports / "flakes.json", log)
    return _verdict(results, log, narrowed=keyword is not None)


def _summary(files: list[Path], dest: Path, log: Callable[[str], None]) -> None:
    """Merge the VM suites' timing files into summary.json and print it."""
    summaries = [json.loads(f.read_text()) for f in files if f.is_file()]
    if not summaries:
        return
    summary = merge(summaries)
    dest.write_text(json.dumps(summary, indent=2) + "\n")
    if not any(t.get("events") for t in summary["tests"]):
        return  # no test made a machine: nothing to show
    log(f"machine timing of this run ({dest}):")
    for line in summary_table(summary):
        log("  " + line)


def _flakes(junits: list[list[Path]], dest: Path, log: Callable[[str], None]) -> None:
    runs = []
    for files in junits:
        outcomes: dict[str, str] = {}
        for f in files:
            if f.is_file():
                outcomes.update(junit_outcomes(f))
        runs.append(outcomes)
    table, lines = flake_table(runs)
    dest.write_text(json.dumps({"runs": len(runs), "tests": table}, indent=2) + "\n")
    log(f"passes and failures over {len(runs)} runs ({dest}):")
    for line in lines:
        log("  " + line)


def _verdict(
    results: list[tuple[str, list[str], int]], log: Callable[[str], None], narrowed: bool = False
) -> int:
    # With -k, an empty suite is expected unless every suite was empty.
    empty_is_error = not narrowed or all(code == NO_TESTS for _, _, code in results)
    for name, args, code in results:
        if code == NO_TESTS:
            shown = shlex.join(
                a for a in args if not a.startswith(("--junitxml=", "--timing-json="))
            )
            kind = "error" if empty_is_error else "note"
            log(f"{kind}: {name} ran no test: `pytest {shown}` selected none")
    failures = [code for _, _, code in results if code not in (0, NO_TESTS)]
    if failures:
        return failures[0]
    empty = any(code == NO_TESTS for _, _, code in results)
    return NO_TESTS if empty and empty_is_error else 0
