"""`invoke test`: unit tests, then the VM scenarios against the built image(s)."""

import subprocess
import sys

from toolkit import paths
from toolkit.arch import resolve_arches
from toolkit.flavors import load_flavor
from toolkit.hostsetup import ensure_host


def pytest(args: list[str]) -> int:
    command = [sys.executable, "-m", "pytest", *args]
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=paths.REPO_ROOT, check=False).returncode


def run_tests(
    flavor: str | None,
    arch: str | None,
    unit_only: bool,
    keyword: str | None,
    workers: int,
    slow: bool,
) -> int:
    flavor_obj = load_flavor(flavor)  # bad names fail before anything runs
    arches = resolve_arches(arch, flavor_obj.architectures)
    reports = paths.build_dir() / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    selection = ["-k", keyword] if keyword else []
    # Unit tests use the real tools too (apt, gpg, mkfs, skopeo, grub-editenv, ...).
    ensure_host(arches=tuple(a.name for a in arches))
    code = pytest(
        ["tests/unit", "-q", "--timeout=300", f"--junitxml={reports}/unit.xml", *selection]
    )
    if code not in (0, 5) or unit_only:
        return code
    from toolkit.build import build

    for a in arches:
        build(flavor_obj.name, a.name)
        marks = "vm or image" if slow else "(vm or image) and not slow"
        args = [
            "tests/e2e",
            "-m",
            marks,
            f"--flavor={flavor_obj.name}",
            f"--arch={a.name}",
            f"--junitxml={reports}/e2e-{flavor_obj.name}-{a.name}.xml",
            "-v",
            *selection,
        ]
        if workers > 1:
            args += ["-n", str(workers)]
        result = pytest(args)
        code = code or (0 if result == 5 else result)
    return code
