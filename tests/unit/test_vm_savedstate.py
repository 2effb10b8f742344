"""The bookkeeping of saved machine states: keys, invalidation when the image changes,
pruning (what `invoke vm.clean` runs), and the save file's header XML, on real files."""

import fcntl
import os
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vm import savedstate
from vm.domain import METADATA_NS, QEMU_NS, metadata_element
from vm.errors import VmError
from vm.machine import MachineOptions
from vm.restore import restorable, state_inputs
from vm.savedstate import SavedState, file_identity, state_key
from vm.testrun import Owner


@pytest.fixture(autouse=True)
def build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path / "build"


def make_state(folder: Path, image: Path) -> SavedState:
    folder.mkdir(parents=True)
    for name in (savedstate.MEMORY_FILE, savedstate.SAVED_XML, "disk.qcow2"):
        (folder / name).write_text("x")
    state = SavedState(
        folder=folder, inputs={"image": file_identity(image), "memory_mib": 1024},
        name="cos-test-state-1", uuid="u", hostname="h", disks=("disk.qcow2",), made_in=30.0,
    )  # fmt: skip
    savedstate.record(state)
    return state


def test_key_follows_the_inputs_and_the_image_file(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"v1")
    first = state_key({"image": file_identity(image), "memory_mib": 1024})
    assert first == state_key({"memory_mib": 1024, "image": file_identity(image)})  # order
    assert first != state_key({"image": file_identity(image), "memory_mib": 2048})
    # A build renames a new image into place: another file, another key.
    (tmp_path / "new").write_bytes(b"v2")
    os.replace(tmp_path / "new", image)
    assert state_key({"image": file_identity(image), "memory_mib": 1024}) != first


def test_machine_options_make_the_inputs(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"v1")
    opts = MachineOptions(arch="x86_64", image=image, vcpus=2)
    inputs = state_inputs(opts, "tcg")
    assert inputs["image"]["path"] == str(image.resolve())
    assert {"firmware", "emulator", "ssh_key", "cloud_config"} <= set(inputs)
    # The registry forward is each restore's own: not part of the key.
    with_registry = MachineOptions(arch="x86_64", image=image, vcpus=2, registry_port=5555)
    assert state_key(state_inputs(with_registry, "tcg")) == state_key(inputs)
    other = MachineOptions(arch="x86_64", image=image, vcpus=2, blank_disk="4G")
    assert state_key(state_inputs(other, "tcg")) != state_key(inputs)
    assert restorable(opts)
    assert not restorable(MachineOptions(image=None))
    assert not restorable(MachineOptions(image=image, iso=tmp_path / "x.iso"))
    assert not restorable(MachineOptions(image=image, keep=True))


def test_a_state_is_loaded_only_when_finished_and_fresh_only_while_the_image_is(
    tmp_path: Path,
) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"v1")
    state = make_state(savedstate.states_dir() / "k1", image)
    loaded = savedstate.load(state.folder)
    assert loaded == state and loaded.fresh()
    (state.folder / savedstate.MEMORY_FILE).unlink()
    assert savedstate.load(state.folder) is None  # unfinished: no memory file
    unfinished = savedstate.states_dir() / "k2"
    unfinished.mkdir()
    assert savedstate.load(unfinished) is None  # no state.json
    image.write_bytes(b"rebuilt in place")
    assert not state.fresh()


def test_prune_removes_stale_and_unfinished_states_but_not_fresh_or_busy_ones(
    tmp_path: Path,
) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"v1")
    root = savedstate.states_dir()
    fresh = make_state(root / "fresh", image)
    other = tmp_path / "other.qcow2"
    other.write_bytes(b"o")
    make_state(root / "stale", other)
    other.unlink()  # its image is gone
    (root / "unfinished").mkdir()
    busy = make_state(root / "busy", tmp_path / "disk.qcow2")
    (busy.folder / savedstate.STATE_FILE).unlink()  # unfinished, but someone makes it now
    with savedstate.locked("busy"):
        removed = savedstate.prune()
    assert sorted(p.name for p in removed) == ["stale", "unfinished"]
    assert fresh.folder.is_dir() and busy.folder.is_dir()
    assert not (root / "stale.lock").exists()
    # vm.clean --all: every state that is not in use.
    assert sorted(p.name for p in savedstate.prune(everything=True)) == ["busy", "fresh"]
    assert not any(root.iterdir())


def test_the_lock_is_exclusive_across_processes() -> None:
    with savedstate.locked("k") as folder:
        assert folder == savedstate.states_dir() / "k"
        fd = os.open(savedstate.states_dir() / "k.lock", os.O_RDWR)
        pid = os.fork()
        if pid == 0:  # another process must not get the lock
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os._exit(1)
            except OSError:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        os.close(fd)


def save_file(path: Path, xml: bytes, cookie: bytes, data_len: int = 4096) -> bytes:
    data = xml + b"\0" + cookie + b"\0"
    header = struct.pack("<16s5I56x", b"LibvirtQemudSave", 2, data_len, 1, 0, len(xml) + 1)
    stream = b"QEVM\0\0\0\3" + os.urandom(64)
    path.write_bytes(header + data.ljust(data_len, b"\0") + stream)
    return stream


def test_header_xml_is_rewritten_in_place_with_cookie_and_stream_kept(tmp_path: Path) -> None:
    memory = tmp_path / "memory.save"
    stream = save_file(memory, b"<domain><name>old</name></domain>", b"<cookie/>")
    assert savedstate.read_header(memory) == (4096, b"<cookie/>")
    new = "<domain><name>a-much-longer-new-name</name></domain>"
    savedstate.write_header_xml(memory, new)
    raw = memory.read_bytes()
    assert raw.endswith(stream) and len(raw) == 92 + 4096 + len(stream)
    magic, version, data_len, running, compressed, cookie_at = struct.unpack("<16s5I", raw[:36])
    assert (magic, version, data_len, running, compressed) == (b"LibvirtQemudSave", 2, 4096, 1, 0)
    body = raw[92 : 92 + data_len]
    assert body[: len(new) + 1] == new.encode() + b"\0"
    assert cookie_at == len(new) + 1 and body[cookie_at:].startswith(b"<cookie/>\0")
    with pytest.raises(VmError, match="needs 5011 bytes, the save file has 4096"):
        savedstate.write_header_xml(memory, "x" * 5000)
    assert memory.read_bytes() == raw  # refused before writing anything


def test_a_file_that_is_not_a_save_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "memory.save"
    bad.write_bytes(b"not a save file" * 10)
    with pytest.raises(VmError, match=r"memory.save is not an uncompressed libvirt save file"):
        savedstate.read_header(bad)
    (tmp_path / "short").write_bytes(b"x")
    with pytest.raises(VmError, match="too short"):
        savedstate.read_header(tmp_path / "short")


SAVED = f"""<domain type='qemu' xmlns:qemu='{QEMU_NS}'>
  <name>cos-test-state-1</name>
  <uuid>11111111-1111-1111-1111-111111111111</uuid>
  <metadata><cos:owner xmlns:cos='{METADATA_NS}' run='old' pid='1' pidstart='1' keep='no'
    dir='/b/vm/states/k'/></metadata>
  <os><nvram>/b/vm/states/k/efivars.fd</nvram></os>
  <devices>
    <disk type='file' device='disk'><source file='/b/vm/states/k/disk.qcow2'/></disk>
    <disk type='file' device='cdrom'><source file='/b/images/installer.iso'/></disk>
    <serial type='file'><source path='/b/vm/states/k/console.log' append='on'/></serial>
  </devices>
  <qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='hostfwd=1'/></qemu:commandline>
</domain>"""


def test_saved_xml_is_retargeted_to_the_restored_machine() -> None:
    owner = Owner("run2", 42, 7)
    xml = savedstate.retarget_xml(
        SAVED, old_dir=Path("/b/vm/states/k"), new_dir=Path("/b/vm/runs/r/m"),
        name="cos-test-m", uuid="22222222-2222-2222-2222-222222222222",
        metadata=metadata_element(owner, Path("/b/vm/runs/r/m")),
        qemu_args=["-netdev", "user,hostfwd=2"],
    )  # fmt: skip
    root = ET.fromstring(xml)
    assert root.findtext("name") == "cos-test-m"
    assert root.findtext("uuid") == "22222222-2222-2222-2222-222222222222"
    assert root.findtext("os/nvram") == "/b/vm/runs/r/m/efivars.fd"
    sources = [el.get("file") or el.get("path") for el in root.iter("source")]
    assert sources == [
        "/b/vm/runs/r/m/disk.qcow2",
        "/b/images/installer.iso",  # outside the template's folder: as it was
        "/b/vm/runs/r/m/console.log",
    ]
    owners = root.findall(f"metadata/{{{METADATA_NS}}}owner")
    assert [(o.get("run"), o.get("pid"), o.get("dir")) for o in owners] == [
        ("run2", "42", "/b/vm/runs/r/m")
    ]
    args = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    assert args == ["-netdev", "user,hostfwd=2"]
