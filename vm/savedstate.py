"""Saved running states of booted machines, the bookkeeping of "boot once, restore many".

A state is made by booting a template machine and saving it with libvirt's
virDomainSave: its memory goes to memory.save, and its disks stay as they were at that
instant (disk.qcow2 over a hard link to the built image, data.qcow2 when it had one).
Each restore gets a new copy-on-write overlay on each of them, its own firmware variables,
port and name, so restored machines are independent of each other and of the state.

States live in build_dir()/vm/states/<key>/, where the key is a digest of everything the
booted machine depends on: the image file's identity (device, inode, size, mtime: a
rebuild renames a new file into place), the machine options, the firmware and the
emulator binary. A changed image gives a new key, and `prune` removes states whose image
is gone or changed; `invoke vm.clean` removes them all. state.json is written last: a
folder without it is an unfinished state, made again by whoever holds its lock next.

libvirt refuses a restore whose XML changes the domain's name or UUID (its ABI check),
yet two machines restored at once need their own. So `restore` rewrites the domain XML in
the save file's header (libvirt's own save format, version 2: a 92-byte header, then the
XML and the migration cookie padded to `data_len`, then QEMU's stream) while holding the
state's lock, and restores from it before letting go.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import paths
from vm.errors import VmError

FORMAT = 2  # bump when what a state holds or how it is restored changes
STATE_FILE = "state.json"
MEMORY_FILE = "memory.save"
SAVED_XML = "saved.xml"

SAVE_MAGIC = b"LibvirtQemudSave"
SAVE_VERSION = 2
_HEADER = struct.Struct("<16s5I56x")  # magic, version, data_len, was_running, compressed,
# cookieOffset (from the XML's start), unused; 92 bytes


def states_dir() -> Path:
    return paths.build_dir() / "vm" / "states"


def file_identity(path: Path) -> dict[str, Any]:
    """What changes when a file is replaced or rewritten, without reading it."""
    resolved = path.resolve()
    st = resolved.stat()
    return {
        "path": str(resolved),
        "dev": st.st_dev,
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def state_key(inputs: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _identity_matches(recorded: dict[str, Any]) -> bool:
    try:
        return file_identity(Path(recorded["path"])) == recorded
    except (OSError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class SavedState:
    folder: Path
    inputs: dict[str, Any]
    name: str  # the template's domain name: the save file's XML still carries it
    uuid: str  # the template's SMBIOS UUID: restored machines keep it (machine ID)
    hostname: str
    disks: tuple[str, ...]  # writable disk files in the folder, e.g. ("disk.qcow2",)
    made_in: float  # seconds from boot to saved

    @property
    def memory(self) -> Path:
        return self.folder / MEMORY_FILE

    @property
    def key(self) -> str:
        return self.folder.name

    def fresh(self) -> bool:
        """Whether every file the state was made from is still the same file."""
        files = [v for v in self.inputs.values() if isinstance(v, dict) and "inode" in v]
        return all(_identity_matches(f) for f in files)


def load(folder: Path) -> SavedState | None:
    """The finished state in `folder`, or None (missing, unfinished or unreadable)."""
    try:
        data = json.loads((folder / STATE_FILE).read_text())
        state = SavedState(
            folder=folder, inputs=data["inputs"], name=data["name"], uuid=data["uuid"],
            hostname=data["hostname"], disks=tuple(data["disks"]), made_in=data["made_in"],
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (state.memory.is_file() and (folder / SAVED_XML).is_file()):
        return None
    return state


def record(state: SavedState) -> None:
    """Write state.json last, by rename: from now on the state is finished."""
    data = {
        "inputs": state.inputs, "name": state.name, "uuid": state.uuid,
        "hostname": state.hostname, "disks": list(state.disks), "made_in": state.made_in,
    }  # fmt: skip
    tmp = state.folder / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state.folder / STATE_FILE)


@contextlib.contextmanager
def locked(key: str) -> Iterator[Path]:
    """Hold the state's lock (blocking): one maker, one restore at a time per state."""
    root = states_dir()
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield root / key
    finally:
        os.close(fd)


def _lock_is_free(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def prune(everything: bool = False) -> list[Path]:
    """Remove states whose image or other inputs changed, unfinished ones nobody is making,
    and with `everything` all of them; a state in use (its lock held) is left alone."""
    root = states_dir()
    removed = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        state = load(folder)
        if state is not None and state.fresh() and not everything:
            continue
        lock = root / f"{folder.name}.lock"
        if not _lock_is_free(lock):
            continue  # being made or restored from right now
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
        removed.append(folder)
    return removed


# ----- the save file ------------------------------------------------------------------------


def read_header(memory: Path) -> tuple[int, bytes]:
    """(data_len, cookie) of a libvirt save file; a clear error for anything else."""
    with memory.open("rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise VmError(f"{memory} is not a libvirt save file (too short)")
        magic, version, data_len, _running, compressed, cookie_at = _HEADER.unpack(head)
        if magic != SAVE_MAGIC or version != SAVE_VERSION or compressed:
            raise VmError(
                f"{memory} is not an uncompressed libvirt save file of version {SAVE_VERSION} "
                f"(magic {magic!r}, version {version}, compressed {compressed})"
            )
        data = f.read(data_len)
    cookie = data[cookie_at:].split(b"\0", 1)[0] if cookie_at else b""
    return data_len, cookie


def write_header_xml(memory: Path, xml: str) -> None:
    """Put `xml` in place of the domain XML in the save file's header, cookie kept."""
    data_len, cookie = read_header(memory)
    body = xml.encode() + b"\0"
    data = body + (cookie + b"\0" if cookie else b"")
    if len(data) > data_len:
        raise VmError(
            f"the domain XML for {memory} needs {len(data)} bytes, the save file has {data_len}"
        )
    header = _HEADER.pack(SAVE_MAGIC, SAVE_VERSION, data_len, 1, 0, len(body) if cookie else 0)
    with memory.open("r+b") as f:
        f.write(header + data.ljust(data_len, b"\0"))
        f.flush()
        os.fsync(f.fileno())


def retarget_xml(
    saved_xml: str,
    *,
    old_dir: Path,
    new_dir: Path,
    name: str,
    uuid: str,
    metadata: ET.Element,
    qemu_args: list[str],
) -> str:
    """The saved domain XML for one restored machine: its name and UUID, its files (every
    path under the template's folder moved to its own), its owner tag and its QEMU
    arguments (the SSH port and registry forward)."""
    from vm.domain import METADATA_NS, QEMU_NS

    root = ET.fromstring(saved_xml)
    root.find("name").text = name  # type: ignore[union-attr]
    root.find("uuid").text = uuid  # type: ignore[union-attr]
    old = str(old_dir)
    for el in root.iter():
        for attr, value in el.attrib.items():
            if value.startswith(old + "/"):
                el.set(attr, str(new_dir) + value[len(old) :])
        if el.text and el.text.startswith(old + "/"):
            el.text = str(new_dir) + el.text[len(old) :]
    meta = root.find("metadata")
    if meta is None:
        meta = ET.SubElement(root, "metadata")
    for el in list(meta):
        if el.tag == f"{{{METADATA_NS}}}owner":
            meta.remove(el)
    meta.append(metadata)
    for el in root.findall(f"{{{QEMU_NS}}}commandline"):
        root.remove(el)
    cmdline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    for arg in qemu_args:
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", value=arg)
    return ET.tostring(root, encoding="unicode") + "\n"
