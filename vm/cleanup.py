"""Remove what dead runs left: domains tagged by a run whose process is gone, their
files, and run folders and port locks nobody owns."""

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from toolkit import paths
from vm.connection import connect
from vm.domain import DOMAIN_PREFIX, METADATA_NS, parse_metadata
from vm.ports import remove_stale_locks
from vm.testrun import Owner, owner_alive, runs_dir


@dataclass(frozen=True)
class TaggedDomain:
    name: str
    active: bool
    persistent: bool
    owner: Owner | None  # None: named like ours but without our tag
    workdir: Path | None

    @property
    def orphaned(self) -> bool:
        return self.owner is not None and not owner_alive(self.owner.pid, self.owner.pid_start)


def tagged_domains(conn: libvirt.virConnect) -> list[TaggedDomain]:
    found = []
    for dom in conn.listAllDomains():
        try:
            name = dom.name()
            if not name.startswith(DOMAIN_PREFIX):
                continue
            try:
                meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
            except libvirt.libvirtError:
                meta = ""
            parsed = parse_metadata(meta) if meta else None
            owner, workdir = parsed if parsed else (None, None)
            found.append(
                TaggedDomain(name, bool(dom.isActive()), bool(dom.isPersistent()), owner, workdir)
            )
        except libvirt.libvirtError:
            continue  # vanished while we looked
    return found


def _remove_domain(conn: libvirt.virConnect, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _safe_to_delete(folder: Path) -> bool:
    """Only folders inside our build folder's vm/ tree: metadata is not trusted blindly."""
    root = (paths.build_dir() / "vm").resolve()
    try:
        return folder.resolve().is_relative_to(root) and folder.resolve() != root
    except OSError:
        return False


def clean_orphans(uri: str | None = None, include_kept: bool = False) -> list[str]:
    """Remove leftovers of dead runs; returns what was removed, one line each.

    Kept machines (vm.up, --keep-vms) are left alone unless `include_kept`.
    """
    removed: list[str] = []
    conn = connect(uri)
    for tagged in tagged_domains(conn):
        if not tagged.orphaned or tagged.owner is None:
            continue
        if tagged.owner.keep and not include_kept:
            continue
        _remove_domain(conn, tagged.name)
        removed.append(f"domain {tagged.name} (run {tagged.owner.run_id})")
        if tagged.workdir and tagged.workdir.is_dir() and _safe_to_delete(tagged.workdir):
            shutil.rmtree(tagged.workdir, ignore_errors=True)
            removed.append(f"folder {tagged.workdir}")
    removed += [f"folder {p}" for p in clean_run_dirs()]
    removed += [f"port lock {port}" for port in remove_stale_locks()]
    return removed


def clean_run_dirs(root: Path | None = None) -> list[Path]:
    """Run folders whose owning process is gone (their domains died with it)."""
    folder = root or runs_dir()
    removed = []
    for run in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            owner = json.loads((run / "owner.json").read_text())
            alive = owner_alive(int(owner["pid"]), int(owner.get("pid_start", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            # No readable owner: a half-made folder, of a dead run once it is old enough.
            alive = time.time() - _mtime(run) < 600
        if not alive:
            shutil.rmtree(run, ignore_errors=True)
            removed.append(run)
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
