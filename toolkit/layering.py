"""Which files of a root file system go in which OCI layer, so that an upgrade pulls only
what changed (a machine reuses the layers its running image has).

The base layer holds Debian's packages as they ship them: each file listed in a non-project
package's md5sums whose content still matches, its symlinks and folders, plus files made
at install time from those alone (BASE_GENERATED). Two builds from the same Debian packages
give the same base layer bytes whatever else changed: the entries whose times the build
sets (folders, symlinks, generated files) get one fixed time. The top layer holds the rest:
configuration, dpkg's and apt's state, the initramfs, the project's packages and the
flavor's files.
"""

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

DPKG_INFO = "var/lib/dpkg/info"
# Made at install time by Debian's own triggers from base files only (and reproducibly):
# udev's hardware database and the byte code of Debian's Python modules.
BASE_GENERATED = (
    re.compile(r"usr/lib/udev/hwdb\.bin"),
    re.compile(r"usr/lib/python3.*/__pycache__(/.*)?"),
)


@dataclass
class Split:
    base: list[str]  # sorted relative paths, parents before children
    pinned: set[str]  # base entries whose mtime the build set: written with a fixed time
    top: list[str]


def _package(info_file: Path) -> str:
    return info_file.name.split(".", 1)[0].split(":", 1)[0]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def split(root: Path, project_packages: set[str]) -> Split:
    """The base and top entries of `root` (relative paths, as tar names them)."""
    info = root / DPKG_INFO
    verified: set[str] = set()
    listed: set[str] = set()  # paths the base packages own (folders, symlinks among them)
    project_owned: set[str] = set()
    for md5sums in sorted(info.glob("*.md5sums")) if info.is_dir() else []:
        if _package(md5sums) in project_packages:
            continue
        for line in md5sums.read_text(errors="surrogateescape").splitlines():
            checksum, _, path = line.partition("  ")
            full = root / path
            if full.is_file() and not full.is_symlink() and _md5(full) == checksum:
                verified.add(path)
    for lst in sorted(info.glob("*.list")) if info.is_dir() else []:
        owned = {p.lstrip("/") for p in lst.read_text(errors="surrogateescape").splitlines()}
        (project_owned if _package(lst) in project_packages else listed).update(owned)
    base: list[str] = []
    pinned: set[str] = set()
    top: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = root / rel
            if rel in verified:
                base.append(rel)
            elif full.is_symlink() and rel in listed and rel not in project_owned:
                base.append(rel)
                pinned.add(rel)  # some are made by maintainer scripts, at build time
            elif full.is_dir() and not full.is_symlink() and rel in listed:
                base.append(rel)
                pinned.add(rel)
            elif (
                rel not in project_owned
                and not full.is_symlink()
                and any(p.fullmatch(rel) for p in BASE_GENERATED)
                and not _of_project_module(rel, full.is_dir(), listed, project_owned)
            ):
                base.append(rel)
                pinned.add(rel)
            else:
                top.append(rel)
    return Split(base, pinned, top)


def _of_project_module(rel: str, is_dir: bool, listed: set[str], owned: set[str]) -> bool:
    """Byte code of a project module, or its folder: it changes with the project."""
    folder, name = os.path.split(rel)
    if is_dir:  # .../<package folder>/__pycache__
        return folder in owned and folder not in listed
    source = os.path.join(os.path.dirname(folder), name.split(".", 1)[0] + ".py")
    return source in owned
