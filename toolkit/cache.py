"""Stages keyed by a hash of their inputs: a no-op rebuild does nothing.

A stage writes its outputs to temporary names and renames them into place only when it
succeeded, then records its key. A failed stage leaves no output that looks finished.

A stage's code is one of its inputs, found rather than listed: code_files() follows the
imports of the module that holds the stage's function, so a helper that module uses (even
through another) is part of the key, and a module it never imports is not.
"""

import ast
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from toolkit import paths
from toolkit.runner import run


def hash_path(path: Path, digest) -> None:
    """Feed a file or a whole tree (names, modes, link targets, contents) to `digest`."""
    entries = [path] if not path.is_dir() or path.is_symlink() else sorted(path.rglob("*"))
    for entry in entries:
        rel = entry.relative_to(path) if entry != path else Path(entry.name)
        digest.update(f"{rel}\0".encode())
        if entry.is_symlink():
            digest.update(b"L" + os.readlink(entry).encode())
        elif entry.is_file():
            digest.update(b"F" + oct(entry.stat().st_mode & 0o777).encode())
            with open(entry, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        else:
            digest.update(b"D")


def inputs_key(inputs: dict) -> str:
    """Stable key over strings, numbers, lists, dicts and Paths (hashed by content)."""
    digest = hashlib.sha256()

    def feed(value):
        if isinstance(value, Path):
            digest.update(b"P")
            if value.exists():
                hash_path(value, digest)
            else:
                digest.update(b"missing")
        elif isinstance(value, dict):
            for k in sorted(value):
                digest.update(f"K{k}\0".encode())
                feed(value[k])
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(json.dumps(value).encode())

    feed(inputs)
    return digest.hexdigest()


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(name: str, source: Path) -> set[str]:
    """Every module `source` (module `name`) imports, at its top or inside functions."""
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_bytes(), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from its package, one level up per extra dot
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from toolkit import disk` imports the module toolkit.disk
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def code_files(module: str, root: Path | None = None) -> list[Path]:
    """The source files that `module` runs from its own top-level package: its own, those
    of every module of that package it imports, transitively, and the packages'
    __init__.py files on the way. `root` holds the package (default: the checkout)."""
    root = paths.REPO_ROOT if root is None else root
    top = module.split(".")[0]
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        if parts[0] != top:
            continue  # the standard library, third-party code, another package of ours
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:depth])
            source = _module_file(root, prefix)
            if prefix in seen or source is None:
                continue
            seen[prefix] = source
            pending.extend(_imported_modules(prefix, source))
    if module not in seen:
        raise ValueError(f"no source for module {module!r} under {root}")
    return sorted(seen.values())


def call_with_outputs(function: partial, out: dict[Path, Path]) -> None:
    """Call `function` with each argument that is one of the stage's outputs replaced by
    that output's temporary name (StageCache.run's `out`)."""

    def swap(value):
        return out.get(value, value) if isinstance(value, Path) else value

    function.func(*map(swap, function.args), **{k: swap(v) for k, v in function.keywords.items()})


@dataclass
class StageResult:
    name: str
    key: str
    status: str  # "built" or "cached"
    seconds: float


def mounts_below(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or under `path`, deepest first."""
    root = os.path.realpath(path)
    points = []
    for line in mountinfo.read_text().splitlines():
        # the fifth field is the mount point, with blanks written as octal escapes
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        # a build killed mid-way (SIGKILL, power loss) leaves mmdebstrap's proc, sys and
        # dev mounts in its tree; removing through them would fail or reach shared files
        for point in mounts_below(path):
            run(["umount", "--lazy", point], what=f"unmounting {point} left by a killed build")
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class StageCache:
    def __init__(self, folder: Path):
        self.folder = folder
        self.stamps = folder / ".stamps"

    def is_current(self, name: str, key: str, outputs: list[Path]) -> bool:
        stamp = self.stamps / name
        return stamp.exists() and stamp.read_text() == key and all(p.exists() for p in outputs)

    def run(
        self,
        name: str,
        inputs: dict,
        outputs: list[Path],
        build: Callable[[dict[Path, Path]], None],
        force: bool = False,
    ) -> StageResult:
        """Call build({final: temporary}) unless the stage is current; then move into place."""
        key = inputs_key(inputs)
        start = time.monotonic()
        if not force and self.is_current(name, key, outputs):
            return StageResult(name, key, "cached", 0.0)
        self.stamps.mkdir(parents=True, exist_ok=True)
        (self.stamps / name).unlink(missing_ok=True)  # outputs are not current from here on
        temporary = {out: out.with_name(f".{out.name}.partial") for out in outputs}
        for tmp in temporary.values():
            remove_tree(tmp)
        try:
            build(temporary)
            for out, tmp in temporary.items():
                remove_tree(out)
                tmp.rename(out)
        except BaseException:
            for tmp in temporary.values():
                remove_tree(tmp)
            raise
        (self.stamps / name).write_text(key)
        return StageResult(name, key, "built", time.monotonic() - start)
