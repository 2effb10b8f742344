"""OCI layouts are checked by real tools: skopeo reads them, umoci unpacks them."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from toolkit import oci
from toolkit.errors import CosError

EPOCH = 1714564800
CREATED = "2024-05-01T12:00:00Z"  # EPOCH as OCI writes it
LABELS = {
    "org.opencontainers.image.title": "cos-debian-trixie",
    "org.opencontainers.image.version": "0.1.0",
    "org.opencontainers.image.description": "containerOS on Debian trixie",
    "org.opencontainers.image.source": "https://localhost/cos",
    "io.cos.flavor": "debian-trixie",
}

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


def make_rootfs(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\nVERSION_CODENAME=trixie\n")
    (root / "usr" / "bin").mkdir(parents=True)
    hello = root / "usr" / "bin" / "hello"
    hello.write_text("#!/bin/sh\necho hello\n")
    hello.chmod(0o755)
    (root / "bin").symlink_to("usr/bin")
    (root / "var" / "empty").mkdir(parents=True)
    return root


@pytest.fixture
def rootfs_tar(tmp_path: Path) -> Path:
    tar = tmp_path / "rootfs.tar"
    oci.tar_directory(make_rootfs(tmp_path / "rootfs"), tar, EPOCH)
    return tar


def build(tar: Path, out: Path, arch: str = "amd64") -> oci.OciImage:
    return oci.build_oci_image(
        tar, out, arch_oci=arch, labels=LABELS, epoch=EPOCH, log=lambda _: None
    )


def test_gzip_stream_is_valid_gzip_over_many_blocks(tmp_path: Path) -> None:
    # Several 1 MiB blocks of mixed data and an odd tail exercise the block joins.
    data = (os.urandom(300_000) + b"cos" * 400_000) * 3 + b"tail"
    out = io.BytesIO()
    diff_id, digest, size = oci.gzip_stream(io.BufferedReader(io.BytesIO(data)), out)
    blob = out.getvalue()
    assert gzip.decompress(blob) == data
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest == "sha256:" + hashlib.sha256(blob).hexdigest() and size == len(blob)
    (tmp_path / "x.gz").write_bytes(blob)
    subprocess.run(["gzip", "-t", str(tmp_path / "x.gz")], check=True)


def test_gzip_stream_of_empty_input() -> None:
    out = io.BytesIO()
    oci.gzip_stream(io.BufferedReader(io.BytesIO(b"")), out)
    assert gzip.decompress(out.getvalue()) == b""


def test_layout_files_and_layer(tmp_path: Path, rootfs_tar: Path) -> None:
    image = build(rootfs_tar, tmp_path / "out")
    assert image.layout_dir == tmp_path / "out" / "oci"
    assert image.archive == tmp_path / "out" / "image.oci.tar"
    assert json.loads((image.layout_dir / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    manifest = json.loads(oci.blob_path(image.layout_dir, image.manifest_digest).read_bytes())
    config = json.loads(oci.blob_path(image.layout_dir, image.config_digest).read_bytes())
    layer = manifest["layers"][0]
    assert layer["mediaType"] == oci.MEDIA_LAYER
    with gzip.open(oci.blob_path(image.layout_dir, layer["digest"])) as f:
        assert f.read() == rootfs_tar.read_bytes()
    assert config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(rootfs_tar.read_bytes()).hexdigest()
    ]
    assert config["created"] == CREATED
    assert image.size == sum(
        p.stat().st_size for p in (image.layout_dir / "blobs/sha256").iterdir()
    )
    assert not list((tmp_path / "out").glob(".*"))  # no temporary leftovers
    assert oci.read_oci_image(tmp_path / "out") == image


@needs_skopeo
def test_skopeo_reads_labels_and_arch(tmp_path: Path, rootfs_tar: Path) -> None:
    image = build(rootfs_tar, tmp_path / "out", arch="arm64")
    for ref in (
        f"oci:{image.layout_dir}",
        f"oci:{image.layout_dir}:0.1.0",
        f"oci-archive:{image.archive}",
    ):
        info = json.loads(skopeo("inspect", ref))
        assert info["Digest"] == image.manifest_digest
        assert info["Architecture"] == "arm64" and info["Os"] == "linux"
        assert info["Created"] == "2024-05-01T12:00:00Z"
        labels = info["Labels"]
        assert labels["org.opencontainers.image.title"] == "cos-debian-trixie"
        assert labels["org.opencontainers.image.version"] == "0.1.0"
        assert labels["org.opencontainers.image.created"] == CREATED
        assert labels["io.cos.flavor"] == "debian-trixie"
        assert labels["io.cos.arch"] == "arm64"


@needs_skopeo
def test_skopeo_copies_to_dir(tmp_path: Path, rootfs_tar: Path) -> None:
    image = build(rootfs_tar, tmp_path / "out")
    skopeo("copy", "--quiet", f"oci:{image.layout_dir}", f"dir:{tmp_path / 'copy'}")
    copied = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    layer_digest = copied["layers"][0]["digest"]
    assert (tmp_path / "copy" / layer_digest.split(":")[1]).exists()


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_umoci_unpacks_the_rootfs(tmp_path: Path, rootfs_tar: Path) -> None:
    image = build(rootfs_tar, tmp_path / "out")
    bundle = tmp_path / "bundle"
    # umoci checks every digest and the diff_id against the uncompressed layer.
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{image.layout_dir}:0.1.0", str(bundle)],
        check=True,
        capture_output=True,
    )
    root = bundle / "rootfs"
    assert (root / "etc" / "os-release").read_text().startswith("ID=debian")
    assert (root / "usr" / "bin" / "hello").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "bin") == "usr/bin"


def test_reproducible(tmp_path: Path, rootfs_tar: Path) -> None:
    a = build(rootfs_tar, tmp_path / "a")
    b = build(rootfs_tar, tmp_path / "b")
    assert a.manifest_digest == b.manifest_digest
    assert a.archive.read_bytes() == b.archive.read_bytes()
    # A directory is tarred the same way each time, too.
    source = tmp_path / "rootfs"
    c = build(source, tmp_path / "c")
    d = build(source, tmp_path / "d")
    assert c.manifest_digest == d.manifest_digest
    # ...and the epoch (`created`) is part of the identity.
    e = oci.build_oci_image(
        rootfs_tar,
        tmp_path / "e",
        arch_oci="amd64",
        labels=LABELS,
        epoch=1735689600,
        log=lambda _: None,
    )
    assert e.manifest_digest != a.manifest_digest


def test_rebuild_replaces_output(tmp_path: Path, rootfs_tar: Path) -> None:
    first = build(rootfs_tar, tmp_path / "out", arch="amd64")
    second = build(rootfs_tar, tmp_path / "out", arch="arm64")
    assert first.manifest_digest != second.manifest_digest
    assert oci.top_descriptor(tmp_path / "out" / "oci")["digest"] == second.manifest_digest
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["image.oci.tar", "oci"]


def test_bad_input_is_named(tmp_path: Path, rootfs_tar: Path) -> None:
    with pytest.raises(CosError, match="'riscv64'"):
        build(rootfs_tar, tmp_path / "out", arch="riscv64")
    with pytest.raises(CosError, match="nope.tar"):
        build(tmp_path / "nope.tar", tmp_path / "out")
    assert not (tmp_path / "out" / "oci").exists()


@needs_skopeo
def test_multi_arch_index(tmp_path: Path, rootfs_tar: Path) -> None:
    images = {arch: build(rootfs_tar, tmp_path / arch, arch=arch) for arch in ("amd64", "arm64")}
    layout = oci.build_index(images, tmp_path / "multi")
    raw = json.loads(skopeo("inspect", "--raw", f"oci:{layout}"))
    assert raw["mediaType"] == oci.MEDIA_INDEX
    platforms = {m["platform"]["architecture"]: m["digest"] for m in raw["manifests"]}
    assert platforms == {arch: image.manifest_digest for arch, image in images.items()}
    for arch in ("amd64", "arm64"):
        info = json.loads(skopeo("inspect", "--override-arch", arch, f"oci:{layout}"))
        # skopeo reports the index digest, and the chosen image's config.
        assert info["Digest"] == oci.top_descriptor(layout)["digest"]
        assert info["Architecture"] == arch and info["Labels"]["io.cos.arch"] == arch
    skopeo(
        "copy",
        "--quiet",
        "--all",
        f"oci-archive:{tmp_path / 'multi' / 'image.oci.tar'}",
        f"dir:{tmp_path / 'd'}",
    )
    again = oci.build_index(images, tmp_path / "multi2")
    assert oci.top_descriptor(again) == oci.top_descriptor(layout)


def test_directory_mtimes_are_clamped_to_the_epoch(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    hello = root / "usr" / "bin" / "hello"
    os.utime(hello, (EPOCH - 100, EPOCH - 100))  # older than the epoch: kept
    first = build(root, tmp_path / "a")
    for path in (root / "etc" / "os-release", root / "var" / "empty"):
        os.utime(path, (EPOCH + 5000, EPOCH + 5000))  # written later: clamped, same bytes
    assert build(root, tmp_path / "b").manifest_digest == first.manifest_digest
    tar = tmp_path / "rootfs.tar"
    oci.tar_directory(root, tar, EPOCH)
    with tarfile.open(tar) as f:
        mtimes = {m.name: m.mtime for m in f.getmembers()}
    assert mtimes["usr/bin/hello"] == EPOCH - 100
    assert mtimes["etc/os-release"] == mtimes["var/empty"] == EPOCH


def test_write_image_puts_layout_and_archive_at_given_paths(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    layout, archive = tmp_path / "out" / ".oci.partial", tmp_path / "out" / ".archive.partial"
    layout.parent.mkdir()
    image = oci.write_image(
        root, layout, archive, arch_oci="amd64", labels=LABELS, epoch=EPOCH, log=lambda _: None
    )
    assert (image.layout_dir, image.archive) == (layout, archive)
    assert oci.top_descriptor(layout)["digest"] == image.manifest_digest
    assert sorted(p.name for p in layout.parent.iterdir()) == [".archive.partial", ".oci.partial"]
    assert image.manifest_digest == build(root, tmp_path / "direct").manifest_digest


def test_digest_of_is_the_content_address() -> None:
    assert oci.digest_of(b"cos") == "sha256:" + hashlib.sha256(b"cos").hexdigest()
    streamed = hashlib.sha256()
    for part in (b"c", b"os"):
        streamed.update(part)
    assert oci.hash_digest(streamed) == oci.digest_of(b"cos")
