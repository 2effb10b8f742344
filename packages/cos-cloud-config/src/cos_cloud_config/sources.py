"""Where cloud-config comes from, in the order it applies (later files add to earlier)."""

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# libyaml's parser when present: several times faster than the pure-Python one at boot.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DIRECTORIES = [Path("/system/oem"), Path("/oem"), Path("/usr/local/cloud-config")]
CIDATA_MOUNT = Path("/run/cos/cidata")


@dataclass
class Document:
    origin: str  # file name (and what it came from) for messages
    data: dict


@dataclass
class Loaded:
    documents: list[Document] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    meta_data: dict = field(default_factory=dict)


def parse(text: str, origin: str, loaded: Loaded) -> None:
    try:
        data = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        loaded.errors.append(f"{origin}:{line}: malformed YAML: {getattr(exc, 'problem', exc)}")
        return
    if data is None:
        return
    if not isinstance(data, dict):
        loaded.errors.append(f"{origin}: expected a mapping at the top level")
        return
    loaded.documents.append(Document(origin, data))


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


def find_cidata_device() -> str | None:
    # One blkid run probes every device: one process start, not one per label spelling.
    listing = subprocess.run(["blkid", "-o", "export"], capture_output=True, text=True, check=False)
    return cidata_in(listing.stdout)


def mount_cidata() -> Path | None:
    """The NoCloud volume, mounted read-only once per boot."""
    if (CIDATA_MOUNT / "user-data").exists() or (CIDATA_MOUNT / "meta-data").exists():
        return CIDATA_MOUNT
    dev = find_cidata_device()
    if not dev:
        return None
    CIDATA_MOUNT.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-o", "ro", dev, str(CIDATA_MOUNT)], check=False).returncode != 0:
        return None
    return CIDATA_MOUNT


def load_all(extra: list[Path] | None = None, use_cidata: bool = True) -> Loaded:
    loaded = Loaded()
    for directory in DIRECTORIES:
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            parse(path.read_text(), str(path), loaded)
    for path in extra or []:
        parse(path.read_text(), str(path), loaded)
    cidata = mount_cidata() if use_cidata else None
    if cidata:
        meta = cidata / "meta-data"
        if meta.exists():
            try:
                loaded.meta_data = yaml.load(meta.read_text(), Loader=SafeLoader) or {}
            except yaml.YAMLError as exc:
                loaded.errors.append(f"{meta}: malformed YAML: {exc}")
        user = cidata / "user-data"
        if user.exists():
            parse(user.read_text(), f"{user} (NoCloud)", loaded)
    return loaded
