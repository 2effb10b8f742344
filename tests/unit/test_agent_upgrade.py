"""`cos upgrade` on the host against a real docker-registry: images built and signed by
the toolkit, pulled, checked and written as a slot by the agent's code. Only finding the
partitions by label is replaced by folders (and, for the full-disk case, a small ext4
file system on a loop device); the slot itself is a real ext4 image, loop-mounted."""

import json
import os
import shutil
import socket
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from local_registry import free_port, quiet

from cos import layers, oci, registry, slots, upgrade
from cos.errors import CosError
from cos.progress import Progress
from toolkit import cosign
from toolkit import oci as toolkit_oci
from toolkit import registry as toolkit_registry
from toolkit.publish import push_signed

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs docker-registry"),
    pytest.mark.skipif(os.geteuid() != 0, reason="writes a slot through a loop mount: root only"),
]

EPOCH = 1714564800
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    storage = tmp_path_factory.mktemp("registry")
    yield toolkit_registry.start_registry(storage, port=free_port(), log=quiet)
    toolkit_registry.stop_registry(storage, log=quiet)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The signing pair, and another pair whose key the machine does not trust."""
    base = tmp_path_factory.mktemp("keys")
    return cosign.ensure_keypair(base / "project"), cosign.ensure_keypair(base / "other")


def make_image(work: Path, arch: str = "amd64", version: str = "2.0.0") -> Path:
    root = work / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/share").mkdir()
    (root / "usr/share/data").write_bytes(os.urandom(256 << 10))  # a layer worth cutting
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text(f"VARIANT_ID=test\nIMAGE_VERSION={version}\n")
    ping = root / "usr/bin/ping"
    ping.write_bytes(b"#!/bin/sh\n")
    ping.chmod(0o4755)
    os.setxattr(ping, "security.capability", CAPABILITY)
    os.chown(root / "etc/os-release", 123, 456)
    (root / "usr/bin/sh-link").symlink_to("ping")
    labels = {
        "org.opencontainers.image.version": version,
        "io.cos.flavor": "test",
        "io.cos.slot-size": str(16 << 20),
    }
    built = toolkit_oci.build_oci_image(
        root, work / "out", arch_oci=arch, labels=labels, epoch=EPOCH, log=quiet
    )
    return built.layout_dir


@pytest.fixture(scope="module")
def published(address, keys, tmp_path_factory, monkeypatch_module):
    """Images in the registry: signed, unsigned, signed with another key, arm64 only."""
    (project, _), (other, _) = keys
    work = tmp_path_factory.mktemp("images")
    layout = make_image(work / "amd64")
    monkeypatch_module.setenv("COS_KEYS_DIR", str(project.parent))
    refs = {"signed": push_signed(layout, f"{address}/cos/test", "2.0.0").reference}
    refs["unsigned"] = f"{address}/cos/unsigned:2.0.0"
    toolkit_registry.push_layout(layout, refs["unsigned"])
    monkeypatch_module.setenv("COS_KEYS_DIR", str(other.parent))
    refs["other-key"] = push_signed(layout, f"{address}/cos/other", "2.0.0").reference
    monkeypatch_module.setenv("COS_KEYS_DIR", str(project.parent))
    arm = make_image(work / "arm64", arch="arm64")
    refs["arm64"] = push_signed(arm, f"{address}/cos/arm", "2.0.0").reference
    return refs


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def machine(tmp_path, monkeypatch, keys):
    """A running machine's view: COS_STATE with slots 2 (active, booted) and 1, COS_GRUB,
    the project's public key in /etc/cos/keys."""
    (_, project_public), _ = keys
    parts = {"COS_STATE": tmp_path / "state", "COS_GRUB": tmp_path / "esp"}
    set_up_state(parts["COS_STATE"])
    (parts["COS_GRUB"] / "EFI/cos").mkdir(parents=True)
    subprocess.run(["grub-editenv", str(parts["COS_GRUB"] / slots.GRUBENV), "create"], check=True)

    @contextmanager
    def mounted(label, writable=False):
        yield parts[label]

    monkeypatch.setattr(slots, "mounted", mounted)
    boot = tmp_path / "boot"
    boot.write_text("slot=active\nimage=/cOS/slots/2.img\nlabel=COS_STATE\n")
    monkeypatch.setattr(slots, "BOOT_FILE", boot)
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    shutil.copy(project_public, keys_dir / "cos-image.pub")
    monkeypatch.setattr(upgrade, "KEYS_DIR", keys_dir)
    monkeypatch.setattr(upgrade, "LOCK", tmp_path / "upgrade.lock")
    monkeypatch.setattr(upgrade, "WORK", tmp_path / "work")
    monkeypatch.setattr(upgrade, "machine_arch", lambda: "amd64")
    monkeypatch.setattr(
        upgrade, "run_stage", lambda stage, progress, **_: None
    )  # no cloud-config here
    return parts["COS_STATE"]


def set_up_state(state: Path) -> None:
    (state / "cOS/slots").mkdir(parents=True)
    for name in ("1", "2"):
        slots.image_path(state, name).write_bytes(b"old system " + name.encode())
        slots.info_path(state, name).write_text(json.dumps({"name": name, "version": "1.0.0"}))
    slots.write_pointer(state, slots.Pointer("2", "1"))


def snapshot(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in state.rglob("*") if p.is_file()}


def grubenv(esp: Path) -> dict:
    out = subprocess.run(
        ["grub-editenv", str(esp / slots.GRUBENV), "list"], capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.split())


@contextmanager
def slot_contents(state: Path, name: str, tmp_path: Path):
    """Slot `name`'s file system, loop-mounted read-only for the test to look into."""
    mnt = tmp_path / f"slot-{name}"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(slots.image_path(state, name)), str(mnt)],
                   check=True)  # fmt: skip
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def silent() -> upgrade.Progress:
    return Progress(stream=open(os.devnull, "w"))  # noqa: SIM115


def test_upgrade_writes_a_slot_switches_and_arms_its_trial(machine, published, tmp_path):
    message = upgrade.upgrade(published["signed"], progress=silent())
    assert "slot 3 holds" in message
    pointer = slots.read_pointer(machine)
    assert (pointer.active, pointer.passive) == ("3", "2")
    assert not slots.image_path(machine, "1").exists()  # the old passive is gone
    assert sorted(p.name for p in (machine / "cOS/slots").iterdir()) == [
        "2.img", "2.json", "3.img", "3.json", "3.layers.json",
    ]  # fmt: skip
    assert grubenv(tmp_path / "esp") == {"cos_tentative": "3"}
    info = slots.slot_info(machine, "3")
    assert (info["flavor"], info["version"]) == ("test", "2.0.0")
    assert info["digest"] == registry.resolve_digest(published["signed"])
    assert slots.history(machine)["last_upgrade"]["to_slot"] == "3"
    # The slot is an ext4 image holding the layer as written: owners, modes, capability.
    with slot_contents(machine, "3", tmp_path) as mnt:
        ping = mnt / "usr/bin/ping"
        assert os.getxattr(ping, "security.capability") == CAPABILITY
        assert ping.stat().st_mode & 0o7777 == 0o4755
        release = (mnt / "etc/os-release").stat()
        assert (release.st_uid, release.st_gid) == (123, 456)
        assert os.readlink(mnt / "usr/bin/sh-link") == "ping"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("unsigned", "unsigned: .*has no signature"),
        ("other-key", "wrongly signed: none of its 1 signature"),
        ("arm64", "wrong arch: the image is for 'arm64', this machine is amd64"),
    ],
)
def test_refused_images_change_nothing(machine, published, tmp_path, kind, message):
    before, env = snapshot(machine), grubenv(tmp_path / "esp")
    with pytest.raises(CosError, match=message):
        upgrade.upgrade(published[kind], progress=silent())
    assert snapshot(machine) == before and grubenv(tmp_path / "esp") == env


def test_no_verify_takes_an_unsigned_image_and_says_so(machine, published, capsys):
    upgrade.upgrade(published["unsigned"], check=False, progress=silent())
    assert "WARNING: --no-verify" in capsys.readouterr().err
    assert slots.read_pointer(machine).active == "3"


def blob_file(storage: Path, digest: str) -> Path:
    hexdigest = digest.split(":")[1]
    return storage / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


@pytest.fixture
def own_registry(tmp_path, keys, monkeypatch):
    """A registry of this test's own, to tamper with its storage."""
    storage = tmp_path / "registry"
    address = toolkit_registry.start_registry(storage, port=free_port(), log=quiet)
    (project, _), _ = keys
    monkeypatch.setenv("COS_KEYS_DIR", str(project.parent))
    layout = make_image(tmp_path / "image")
    reference = push_signed(layout, f"{address}/cos/test", "2.0.0").reference
    yield storage, reference, layout
    toolkit_registry.stop_registry(storage, log=quiet)


def test_tampered_layer_is_refused_by_its_digest_and_leaves_nothing(
    machine, own_registry, tmp_path
):
    storage, reference, layout = own_registry
    manifest = json.loads(
        toolkit_oci.blob_path(layout, toolkit_oci.top_descriptor(layout)["digest"]).read_bytes()
    )
    layer = manifest["layers"][0]["digest"]
    data = bytearray(blob_file(storage, layer).read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob_file(storage, layer).write_bytes(bytes(data))
    before, env = snapshot(machine), grubenv(tmp_path / "esp")
    with pytest.raises(CosError, match=f"layer 1/1 {layer}"):
        upgrade.upgrade(reference, progress=silent())
    assert snapshot(machine) == before and grubenv(tmp_path / "esp") == env
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


class Proxy:
    """Forwards to the registry as a man in the middle would: `limit` cuts a blob download
    off after that many bytes; `swap` replaces bytes in manifest responses fetched by
    digest (same length, so only the content check can notice)."""

    def __init__(self, target: str, limit: int = 1 << 40, swap: tuple[bytes, bytes] = (b"", b"")):
        self.target = target.split(":")
        self.limit = limit
        self.swap = swap
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection((self.target[0], int(self.target[1])))
        request = client.recv(65536)
        upstream.sendall(request)
        line = request.split(b"\r\n")[0]
        cut = b"/blobs/" in line and line.startswith(b"GET")
        tamper = b"/manifests/sha256:" in line and line.startswith(b"GET") and self.swap[0]
        sent = 0
        while True:
            data = upstream.recv(65536)
            if not data:
                break
            if tamper:
                data = data.replace(*self.swap)
            if cut and sent + len(data) > self.limit:
                client.sendall(data[: self.limit - sent])
                break
            client.sendall(data)
            sent += len(data)
        client.close()
        upstream.close()

    def close(self) -> None:
        self.server.close()


def test_registry_gone_mid_pull_leaves_the_slots_as_they_were(machine, own_registry, tmp_path):
    storage, reference, _ = own_registry
    digest = registry.resolve_digest(reference)
    host = reference.split("/")[0]
    # The config blob is small and passes; the layer is cut after 2 KiB.
    proxy = Proxy(host, limit=2048)
    try:
        via_proxy = reference.replace(host, proxy.address).split(":2.0.0")[0] + "@" + digest
        before, env = snapshot(machine), grubenv(tmp_path / "esp")
        with pytest.raises(CosError, match="layer 1/1|config"):
            upgrade.upgrade(via_proxy, check=False, progress=silent())
    finally:
        proxy.close()
    assert snapshot(machine) == before and grubenv(tmp_path / "esp") == env


def test_tampered_manifest_is_refused(machine, own_registry, tmp_path):
    _, reference, _ = own_registry
    host = reference.split("/")[0]
    proxy = Proxy(host, swap=(b'"schemaVersion":2', b'"schemaVersion":3'))
    try:
        before = snapshot(machine)
        with pytest.raises(CosError, match="tampered manifest: its content has digest"):
            upgrade.upgrade(reference.replace(host, proxy.address), progress=silent())
    finally:
        proxy.close()
    assert snapshot(machine) == before


def test_full_disk_is_refused_with_the_numbers(machine, published, tmp_path, monkeypatch):
    small = tmp_path / "small.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(small), "8M"], check=True)
    state = tmp_path / "small-state"
    state.mkdir()
    subprocess.run(["mount", "-o", "loop", str(small), str(state)], check=True)
    try:
        set_up_state(state)
        monkeypatch.setattr(slots, "mounted", contextmanager(lambda label, writable=False: (
            yield state if label == "COS_STATE" else tmp_path / "esp")))  # fmt: skip
        before = snapshot(state)
        with pytest.raises(CosError, match=r"not enough space .*needed 16 MiB, available \d MiB"):
            upgrade.upgrade(published["signed"], progress=silent())
        assert snapshot(state) == before
    finally:
        subprocess.run(["umount", str(state)], check=True)


def test_a_second_upgrade_is_refused_while_one_runs(machine, published):
    with upgrade.one_upgrade_at_a_time():
        with pytest.raises(CosError, match="another cos upgrade is running"):
            upgrade.upgrade(published["signed"], progress=silent())


def test_leftovers_of_an_interrupted_upgrade_are_removed(machine, published):
    slots.image_path(machine, "3").write_bytes(b"written, never switched to")
    (machine / "cOS/slots/.4.img.new").write_bytes(b"cut off while writing")
    upgrade.upgrade(published["signed"], progress=silent())
    names = sorted(p.name for p in (machine / "cOS/slots").iterdir())
    assert names == ["2.img", "2.json", "3.img", "3.json", "3.layers.json"]
    assert slots.image_path(machine, "3").stat().st_size == 16 << 20  # the real new slot


def test_upgrade_from_passive_is_refused(machine, published, tmp_path):
    (tmp_path / "boot").write_text("slot=passive\nimage=/cOS/slots/1.img\nlabel=COS_STATE\n")
    with pytest.raises(CosError, match="not the active slot 2"):
        upgrade.upgrade(published["signed"], progress=silent())


def test_dry_run_checks_everything_and_writes_nothing(machine, published):
    before = snapshot(machine)
    assert "would write slot 3" in upgrade.upgrade(
        published["signed"], dry_run=True, progress=silent()
    )
    assert snapshot(machine) == before


def test_whiteouts_remove_lower_layers_content(tmp_path):
    import gzip
    import io
    import tarfile

    def layer(entries) -> list[bytes]:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                if data is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return [gzip.compress(raw.getvalue())]

    root = tmp_path / "root"
    root.mkdir()
    lower = [("a", None), ("a/old", b"1"), ("b", None), ("b/x", b"1"), ("gone", b"1")]
    upper = [("a", None), ("a/.wh..wh..opq", b""), ("a/new", b"2"), (".wh.gone", b""),
             ("b/y", b"2")]  # fmt: skip
    layers.apply_layer(iter(layer(lower)), root, "layer 1")
    layers.apply_layer(iter(layer(upper)), root, "layer 2")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "a", "a/new", "b", "b/x", "b/y",
    ]  # fmt: skip
    with pytest.raises(CosError, match="points outside the image"):
        layers.apply_layer(iter(layer([("../escape", b"x")])), root, "layer 3")


def test_index_gives_this_arch_or_says_which_it_has():
    index = {
        "manifests": [{"digest": "sha256:a", "platform": {"os": "linux", "architecture": "arm64"}}]
    }
    assert oci.manifest_for_arch(index, "arm64", "x")["digest"] == "sha256:a"
    with pytest.raises(
        CosError, match="wrong arch: no linux/amd64 image in the index .*linux/arm64"
    ):
        oci.manifest_for_arch(index, "amd64", "x")


def test_an_image_that_extends_the_running_one_pulls_only_its_new_layer(
    machine, own_registry, tmp_path
):
    storage, reference, layout = own_registry
    upgrade.upgrade(reference, progress=silent())  # slot 3: made of the image's layer
    (tmp_path / "boot").write_text("slot=active\nimage=/cOS/slots/3.img\nlabel=COS_STATE\n")
    derived = toolkit_oci.derive_image(
        layout, tmp_path / "derived", {"etc/extra": (b"from the new layer\n", 0o644)},
        labels={"org.opencontainers.image.version": "3.0.0"}, epoch=EPOCH,
    )  # fmt: skip
    v3 = push_signed(derived, reference.rsplit(":", 1)[0], "3.0.0").reference
    # The shared layer can no longer be downloaded: the upgrade must not need it.
    base = json.loads(toolkit_oci.blob_path(layout, toolkit_oci.top_descriptor(layout)["digest"])
                      .read_bytes())["layers"][0]  # fmt: skip
    blob_file(storage, base["digest"]).unlink()
    message = upgrade.upgrade(v3, progress=silent())
    assert "slot 4 holds" in message and "(pulled 0.0 of 0.3 MiB)" in message
    pulled, _, total = slots.history(machine)["last_upgrade"]["pulled"].partition(" of ")
    assert int(pulled) < 1024 < int(total.split()[0])
    with slot_contents(machine, "4", tmp_path) as mnt:
        assert (mnt / "etc/extra").read_text() == "from the new layer\n"
        assert os.getxattr(mnt / "usr/bin/ping", "security.capability") == CAPABILITY
    assert slots.slot_info(machine, "4")["layers"][0] == base["digest"]


def test_from_a_multi_arch_index_the_machine_takes_its_own_arch(
    machine, address, keys, tmp_path, monkeypatch
):
    monkeypatch.setenv("COS_KEYS_DIR", str(keys[0][0].parent))
    layouts = {arch: make_image(tmp_path / arch, arch=arch) for arch in ("amd64", "arm64")}
    images = {arch: toolkit_oci.read_oci_image(layout.parent) for arch, layout in layouts.items()}
    index = toolkit_oci.build_index(images, tmp_path / "index")
    reference = push_signed(index, f"{address}/cos/multi", "2.0.0").reference
    upgrade.upgrade(reference, progress=silent())
    info = slots.slot_info(machine, "3")
    assert info["digest"] == registry.resolve_digest(reference)  # the signed index
    assert info["manifest"] == images["amd64"].manifest_digest


@pytest.mark.parametrize(
    ("upper", "reused"),
    [
        ({"etc/feature-a": (b"a\n", 0o644)}, True),  # only adds: can be taken off a copy
        ({"etc/os-release": (b"VARIANT_ID=a\n", 0o644)}, False),  # replaces a base file
    ],
)
def test_an_image_that_shares_only_the_base_layer_pulls_the_rest(
    machine, own_registry, tmp_path, upper, reused
):
    storage, reference, layout = own_registry
    repository = reference.rsplit(":", 1)[0]
    a = toolkit_oci.derive_image(layout, tmp_path / "a", upper, labels={}, epoch=EPOCH)
    b = toolkit_oci.derive_image(
        layout, tmp_path / "b", {"etc/feature-b": (b"b\n", 0o644)}, labels={}, epoch=EPOCH
    )
    upgrade.upgrade(push_signed(a, repository, "a").reference, progress=silent())  # slot 3
    (tmp_path / "boot").write_text("slot=active\nimage=/cOS/slots/3.img\nlabel=COS_STATE\n")
    base = json.loads(toolkit_oci.blob_path(layout, toolkit_oci.top_descriptor(layout)["digest"])
                      .read_bytes())["layers"][0]  # fmt: skip
    if reused:  # then the shared layer cannot have been pulled again
        blob_file(storage, base["digest"]).unlink()
    upgrade.upgrade(push_signed(b, repository, "b").reference, progress=silent())  # slot 4
    pulled = int(slots.history(machine)["last_upgrade"]["pulled"].split()[0])
    assert (pulled < base["size"]) == reused
    with slot_contents(machine, "4", tmp_path) as mnt:
        assert (mnt / "etc/feature-b").read_text() == "b\n"
        assert not (mnt / "etc/feature-a").exists()
        assert (mnt / "etc/os-release").read_text().startswith("VARIANT_ID=test")
        assert os.getxattr(mnt / "usr/bin/ping", "security.capability") == CAPABILITY
