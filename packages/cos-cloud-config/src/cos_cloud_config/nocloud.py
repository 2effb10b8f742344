"""The NoCloud datasource: a volume labelled cidata (any case) with user-data, meta-data
and vendor-data. What it holds is kept in /oem/nocloud (COS_OEM), so it applies again after
the volume is gone; a volume with a new instance-id replaces the kept copy (a new
instance), and one with the same instance-id refreshes it."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

# libyaml's parser when present: several times faster at boot (sources.py uses it too).
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MOUNT = Path("/run/cos/cidata")
FILES = ("meta-data", "user-data", "vendor-data", "network-config")
KEPT = "oem/nocloud"  # under the root; /run/cos/nocloud where there is no COS_OEM


@dataclass
class Seed:
    where: Path  # the folder holding the files (the kept copy)
    instance_id: str | None
    meta_data: dict
    new_instance: bool = False


def cidata_in(blkid_export: str) -> str | None:
    """The device labelled cidata (any case, as cloud-init accepts) in `blkid -o export`."""
    device = None
    for line in blkid_export.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME":
            device = value
        elif key == "LABEL" and value.lower() == "cidata":
            return device
    return None


def mount_volume() -> Path | None:
    """The volume, mounted read-only once per boot (each later stage finds it mounted)."""
    if any((MOUNT / name).exists() for name in FILES):
        return MOUNT
    listing = subprocess.run(["blkid", "-o", "export"], capture_output=True, text=True, check=False)
    device = cidata_in(listing.stdout)
    if not device:
        return None
    MOUNT.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-o", "ro", device, str(MOUNT)], capture_output=True, check=False
    )
    return MOUNT if mounted.returncode == 0 else None


def read_meta_data(folder: Path, errors: list[str]) -> dict:
    path = folder / "meta-data"
    if not path.exists():
        return {}
    try:
        data = yaml.load(path.read_text(), Loader=SafeLoader) or {}
    except yaml.YAMLError as exc:
        errors.append(f"{path}: malformed YAML: {exc}")
        return {}
    if not isinstance(data, dict):
        errors.append(f"{path}: expected a mapping (instance-id, local-hostname)")
        return {}
    return data


def keep_folder(root: Path) -> Path:
    oem = root / "oem"
    return (
        root / KEPT
        if os.path.ismount(oem) and os.access(oem, os.W_OK)
        else root / "run/cos/nocloud"
    )


def refresh(root: Path, errors: list[str], volume: Path | None = None) -> Seed | None:
    """The seed to apply: the volume's, kept for later boots; else the kept copy."""
    kept = keep_folder(root)
    stale = kept.with_name(kept.name + ".old")
    if not kept.exists() and stale.exists():
        os.rename(stale, kept)  # a power cut between the two renames below
    if volume is None:
        volume = mount_volume()
    if volume is not None:
        meta = read_meta_data(volume, errors)
        old = read_meta_data(kept, []) if kept.exists() else {}
        new_instance = bool(kept.exists() and old.get("instance-id") != meta.get("instance-id"))
        try:
            _replace_folder(volume, kept)
        except OSError as exc:
            errors.append(f"{volume}: cannot keep a copy in {kept}: {exc}")
            return Seed(volume, meta.get("instance-id"), meta, new_instance)
        return Seed(kept, meta.get("instance-id"), meta, new_instance)
    if kept.exists():
        meta = read_meta_data(kept, errors)
        return Seed(kept, meta.get("instance-id"), meta)
    return None


def _replace_folder(source: Path, target: Path) -> None:
    """The kept copy is replaced whole, never left half-written (a new folder, then a rename)."""
    wanted = {name: (source / name).read_bytes() for name in FILES if (source / name).is_file()}
    if (
        target.is_dir()
        and {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == wanted
    ):
        return
    fresh = target.with_name(target.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True, mode=0o700)
    for name, data in wanted.items():
        with open(fresh / name, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())  # these files, not every file system (sync costs seconds here)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(fresh, target)
    shutil.rmtree(old, ignore_errors=True)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
