"""OCI image layouts from a rootfs tar: one gzip layer, config with labels, manifest, index.

The layer is compressed in 1 MiB blocks on every core (pigz's scheme, in-process), so a
500 MB rootfs takes seconds, and the output is the same bytes whatever the core count:
the same rootfs tar and epoch give the same manifest digest on every machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cos.oci import (
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_LAYER,
    MEDIA_MANIFEST,
    digest_of,
    hash_digest,
)
from toolkit.errors import CosError
from toolkit.layering import split
from toolkit.reproducible import DEFAULT_EPOCH

__all__ = ["MEDIA_CONFIG", "MEDIA_INDEX", "MEDIA_LAYER", "MEDIA_MANIFEST", "digest_of"]

REF_NAME = "org.opencontainers.image.ref.name"
ARCHES_OCI = ("amd64", "arm64")

LAYOUT_NAME = "oci"  # out_dir/oci is the layout folder
ARCHIVE_NAME = "image.oci.tar"  # out_dir/image.oci.tar is the same layout as one file

_BLOCK = 1 << 20
_WINDOW = 32 * 1024  # deflate's window: each block is primed with the previous 32 KiB
_LEVEL = 1  # about 3x faster than 6 for ~10% more bytes; builds are on the critical path
# mtime 0, no name, OS unix: the header carries nothing that changes between builds.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


@dataclass
class OciImage:
    layout_dir: Path
    archive: Path
    manifest_digest: str
    config_digest: str
    size: int  # bytes of all blobs (layer + config + manifest): what a pull downloads


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def blob_path(layout_dir: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or len(hexdigest) != 64:
        raise CosError(f"{layout_dir}: unsupported digest {digest!r}")
    return layout_dir / "blobs" / "sha256" / hexdigest


def _write_blob(layout_dir: Path, data: bytes, media_type: str) -> dict:
    digest = digest_of(data)
    blob_path(layout_dir, digest).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _deflate_block(data: bytes, primer: bytes, last: bool) -> bytes:
    comp = (
        zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, primer)
        if primer
        else zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
    )
    # A sync flush ends each block on a byte boundary, so raw deflate blocks concatenate.
    return comp.compress(data) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def gzip_stream(src: BinaryIO, dst: BinaryIO) -> tuple[str, str, int]:
    """Compress src into dst as gzip; return (diff_id, digest of the gzip, gzip size).

    src must be buffered (BufferedReader.read(n) returns n bytes until EOF), which keeps
    block boundaries, and so the output, fixed.
    """
    raw_hash, gz_hash = hashlib.sha256(), hashlib.sha256()
    crc, raw_size, gz_size = 0, 0, 0

    def emit(chunk: bytes) -> None:
        nonlocal gz_size
        gz_hash.update(chunk)
        dst.write(chunk)
        gz_size += len(chunk)

    emit(_GZIP_HEADER)
    workers = os.cpu_count() or 1
    pending: deque[Future[bytes]] = deque()
    primer = b""
    with ThreadPoolExecutor(workers) as pool:
        block = src.read(_BLOCK)
        while True:
            following = src.read(_BLOCK) if block else b""
            last = not following
            raw_hash.update(block)
            crc = zlib.crc32(block, crc)
            raw_size += len(block)
            pending.append(pool.submit(_deflate_block, block, primer, last))
            primer = (primer + block)[-_WINDOW:]
            while pending and (last or len(pending) > 2 * workers):
                emit(pending.popleft().result())
            if last:
                break
            block = following
    emit(crc.to_bytes(4, "little") + (raw_size & 0xFFFFFFFF).to_bytes(4, "little"))
    return hash_digest(raw_hash), hash_digest(gz_hash), gz_size


def tar_directory(
    root: Path,
    dest: Path,
    epoch: int,
    entries: list[str] | None = None,
    pinned: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Reproducible tar of a directory (or of `entries` of it, relative paths in order):
    numeric owners, int mtimes, none later than `epoch` (the build's source_date_epoch()),
    and `pinned` entries at DEFAULT_EPOCH, so a rebuilt tree whose files differ only by
    when they were written gives the same bytes. PAX format, with extended attributes
    (file capabilities, ACLs, SELinux labels) as `SCHILY.xattr.*` records, as container
    tools write and read them."""
    if entries is None:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            entries += [n if rel == "." else f"{rel}/{n}" for n in sorted(dirnames + filenames)]
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in entries:
            path = root / name
            info = tar.gettarinfo(str(path), name)
            info.uname = info.gname = ""
            info.mtime = DEFAULT_EPOCH if name in pinned else min(int(info.mtime), epoch)
            info.pax_headers = xattr_records(path)
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def xattr_records(path: Path) -> dict[str, str]:
    """A file's extended attributes as PAX records; binary values survive as tarfile's
    surrogate-escaped strings (it writes them with hdrcharset=BINARY)."""
    records = {}
    for name in sorted(os.listxattr(path, follow_symlinks=False)):
        value = os.getxattr(path, name, follow_symlinks=False)
        records[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return records


def _archive_layout(layout_dir: Path, dest: Path) -> None:
    """The layout as one tar (skopeo's oci-archive:), with fixed metadata."""
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(layout_dir.rglob("*")):
            info = tar.gettarinfo(str(path), str(path.relative_to(layout_dir)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isdir():
                tar.addfile(info)
            else:
                with path.open("rb") as f:
                    tar.addfile(info, f)


def _replace(tmp: Path, final: Path) -> None:
    """Put tmp in place of final: a reader sees the old or the new one, never half of one."""
    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def _write_layout_frame(layout_dir: Path, top: dict) -> None:
    (layout_dir / "oci-layout").write_bytes(_json_bytes({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [top]}
    (layout_dir / "index.json").write_bytes(_json_bytes(index))


def _finish(tmp_layout: Path, out_dir: Path) -> tuple[Path, Path]:
    tmp_archive = out_dir / f".{ARCHIVE_NAME}.tmp"
    _archive_layout(tmp_layout, tmp_archive)
    layout, archive = out_dir / LAYOUT_NAME, out_dir / ARCHIVE_NAME
    _replace(tmp_layout, layout)
    _replace(tmp_archive, archive)
    return layout, archive


def _fresh_tmp_layout(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{LAYOUT_NAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted build
    (tmp / "blobs" / "sha256").mkdir(parents=True)
    return tmp


def build_oci_image(
    rootfs_tar: Path,
    out_dir: Path,
    *,
    arch_oci: str,
    labels: dict[str, str],
    epoch: int,
    project_packages: set[str] | None = None,
    log: Callable[[str], None] = print,
) -> OciImage:
    """Write out_dir/oci (layout) and out_dir/image.oci.tar from a rootfs tar or directory.

    `epoch` (the build's source_date_epoch()) is the image's `created` time, and a
    directory's files are tarred with no mtime later than it. With `project_packages`, a
    directory becomes two layers (toolkit.layering): Debian's packages as shipped, then
    the rest, so that an upgrade where only the project changed pulls the second only.
    `labels` go into config.Labels; org.opencontainers.image.created and io.cos.arch are
    filled in from `epoch` and `arch_oci` when absent. The version label, if given, names
    the image in index.json (so `oci:<layout>:<version>` works too).
    """
    created = created_time(epoch)
    rootfs_tar = Path(rootfs_tar)
    if arch_oci not in ARCHES_OCI:
        raise CosError(f"unknown OCI architecture {arch_oci!r}; valid: {', '.join(ARCHES_OCI)}")
    if not rootfs_tar.exists():
        raise CosError(f"rootfs {rootfs_tar} does not exist")
    labels = {"org.opencontainers.image.created": created, "io.cos.arch": arch_oci, **labels}
    started = time.monotonic()
    tmp = _fresh_tmp_layout(Path(out_dir))
    partial = tmp / "blobs" / "sha256" / ".layer.partial"
    if not rootfs_tar.is_dir():
        parts: list[tuple[list[str] | None, set[str]]] = [(None, set())]
    elif project_packages is None:
        parts = [(None, set())]
    else:
        layering = split(rootfs_tar, project_packages)
        parts = [(layering.base, layering.pinned), (layering.top, set())]
    layers, diff_ids = [], []
    for entries, pinned in parts:
        with tempfile.TemporaryDirectory(dir=tmp) as scratch:
            source = rootfs_tar
            if rootfs_tar.is_dir():
                source = Path(scratch) / "rootfs.tar"
                tar_directory(rootfs_tar, source, epoch, entries, pinned)
            with source.open("rb") as src, partial.open("wb") as dst:
                diff_id, layer_digest, layer_size = gzip_stream(src, dst)
        os.rename(partial, blob_path(tmp, layer_digest))
        layers.append({"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size})
        diff_ids.append(diff_id)

    config = {
        "architecture": arch_oci,
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/bash"],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": f"cos toolkit: rootfs layer {n + 1}"}
            for n in range(len(layers))
        ],
    }
    config_desc = _write_blob(tmp, _json_bytes(config), MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_desc,
        "layers": layers,
    }
    manifest_desc = _write_blob(tmp, _json_bytes(manifest), MEDIA_MANIFEST)
    top = {
        **manifest_desc,
        "platform": {"architecture": arch_oci, "os": "linux"},
        "annotations": {REF_NAME: labels.get("org.opencontainers.image.version", "latest")},
    }
    _write_layout_frame(tmp, top)
    layout, archive = _finish(tmp, Path(out_dir))
    sizes = [layer["size"] for layer in layers]
    size = sum(sizes) + config_desc["size"] + manifest_desc["size"]
    log(
        f"oci: {arch_oci} image {manifest_desc['digest'][:19]} layers "
        f"{' + '.join(f'{n / 1e6:.1f}' for n in sizes)} MB "
        f"in {time.monotonic() - started:.1f}s -> {archive}"
    )
    return OciImage(layout, archive, manifest_desc["digest"], config_desc["digest"], size)


def write_image(
    rootfs: Path,
    layout: Path,
    archive: Path,
    *,
    arch_oci: str,
    labels: dict[str, str],
    epoch: int,
    project_packages: set[str] | None = None,
    log: Callable[[str], None] = print,
) -> OciImage:
    """build_oci_image() with the layout folder and the archive at the given paths."""
    staging = layout.with_name(layout.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        built = build_oci_image(
            rootfs, staging, arch_oci=arch_oci, labels=labels, epoch=epoch,
            project_packages=project_packages, log=log,
        )  # fmt: skip
        built.layout_dir.rename(layout)
        built.archive.rename(archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OciImage(layout, archive, built.manifest_digest, built.config_digest, built.size)


def created_time(epoch: int) -> str:
    """`epoch` as OCI's `created` (RFC 3339, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def top_descriptor(layout_dir: Path) -> dict:
    """The one descriptor in index.json: an image manifest or an image index."""
    index_file = Path(layout_dir) / "index.json"
    try:
        manifests = json.loads(index_file.read_bytes())["manifests"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CosError(f"{index_file}: not an OCI layout index ({e})") from None
    if len(manifests) != 1:
        raise CosError(f"{index_file}: expected one image, found {len(manifests)}")
    return manifests[0]


def read_blob_json(layout_dir: Path, digest: str) -> dict:
    path = blob_path(Path(layout_dir), digest)
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise CosError(f"{path}: cannot read blob {digest} ({e})") from None


def read_oci_image(out_dir: Path) -> OciImage:
    """The OciImage of an earlier build_oci_image(out_dir) (for cached builds)."""
    return _image_of(Path(out_dir) / LAYOUT_NAME, Path(out_dir) / ARCHIVE_NAME)


def _image_of(layout: Path, archive: Path) -> OciImage:
    top = top_descriptor(layout)
    if top.get("mediaType") != MEDIA_MANIFEST:
        raise CosError(f"{layout}: holds {top.get('mediaType')}, not a single image")
    manifest = read_blob_json(layout, top["digest"])
    size = top["size"] + manifest["config"]["size"] + sum(x["size"] for x in manifest["layers"])
    return OciImage(layout, archive, top["digest"], manifest["config"]["digest"], size)


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)  # blobs are content-addressed and never rewritten: sharing is safe
    except OSError:
        shutil.copyfile(src, dst)


def build_index(images: dict[str, OciImage], out_dir: Path) -> Path:
    """Multi-arch layout in out_dir/oci (+ out_dir/image.oci.tar): an image index, keyed by
    OCI architecture, over the per-arch images. Returns the layout folder."""
    if not images:
        raise CosError("build_index: no images given")
    tmp = _fresh_tmp_layout(Path(out_dir))
    entries = []
    ref_name = "latest"
    for arch_oci, image in sorted(images.items()):
        if arch_oci not in ARCHES_OCI:
            raise CosError(f"unknown OCI architecture {arch_oci!r}; valid: {', '.join(ARCHES_OCI)}")
        top = top_descriptor(image.layout_dir)
        if top["digest"] != image.manifest_digest:
            raise CosError(
                f"{image.layout_dir}: holds {top['digest']}, not {image.manifest_digest}"
            )
        ref_name = top.get("annotations", {}).get(REF_NAME, ref_name)
        manifest = read_blob_json(image.layout_dir, top["digest"])
        for digest in [top["digest"], manifest["config"]["digest"]] + [
            layer["digest"] for layer in manifest["layers"]
        ]:
            _link_or_copy(blob_path(image.layout_dir, digest), blob_path(tmp, digest))
        entries.append(
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": top["digest"],
                "size": top["size"],
                "platform": {"architecture": arch_oci, "os": "linux"},
            }
        )
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries}
    index_desc = _write_blob(tmp, _json_bytes(index), MEDIA_INDEX)
    _write_layout_frame(tmp, {**index_desc, "annotations": {REF_NAME: ref_name}})
    layout, _ = _finish(tmp, Path(out_dir))
    return layout


@dataclass
class NewLayer:
    """A layer to put on a base image: a gzip tar blob and its uncompressed digest."""

    blob: Path
    diff_id: str
    created_by: str


def gzip_layer(tar: Path, dest_dir: Path, created_by: str) -> NewLayer:
    """`tar` compressed (as build_oci_image compresses) into dest_dir/<digest>."""
    partial = dest_dir / ".layer.partial"
    with tar.open("rb") as src, partial.open("wb") as dst:
        diff_id, digest, _size = gzip_stream(src, dst)
    blob = dest_dir / digest.partition(":")[2]
    os.rename(partial, blob)
    return NewLayer(blob, diff_id, created_by)


def _stack(
    base_layout: Path,
    tmp: Path,
    layers: list[NewLayer],
    labels: dict[str, str],
    epoch: int,
    container_config: dict | None = None,
) -> dict:
    """Write into the fresh layout `tmp` the base image plus `layers` on top: the base
    layers are shared as they are (hard links), `container_config` (Env, Cmd, ...) replaces
    the base's when given, `labels` are merged in. Returns the manifest descriptor."""
    top = top_descriptor(base_layout)
    manifest = read_blob_json(base_layout, top["digest"])
    config = read_blob_json(base_layout, manifest["config"]["digest"])
    for layer in manifest["layers"]:
        _link_or_copy(blob_path(base_layout, layer["digest"]), blob_path(tmp, layer["digest"]))
    if container_config is not None:
        config["config"] = dict(container_config)
    config["config"]["Labels"] = {**(config["config"].get("Labels") or {}), **labels}
    descriptors = []
    for layer in layers:
        digest = "sha256:" + hashlib.sha256(layer.blob.read_bytes()).hexdigest()
        _link_or_copy(layer.blob, blob_path(tmp, digest))
        descriptors.append(
            {"mediaType": MEDIA_LAYER, "digest": digest, "size": layer.blob.stat().st_size}
        )
        config["rootfs"]["diff_ids"].append(layer.diff_id)
        config["history"].append({"created": created_time(epoch), "created_by": layer.created_by})
    config["created"] = created_time(epoch)
    config_desc = _write_blob(tmp, _json_bytes(config), MEDIA_CONFIG)
    derived = {**manifest, "config": config_desc, "layers": [*manifest["layers"], *descriptors]}
    manifest_desc = _write_blob(tmp, _json_bytes(derived), MEDIA_MANIFEST)
    name = config["config"]["Labels"].get("org.opencontainers.image.version", "latest")
    # a layout written by another tool may not say: the config does
    platform = top.get("platform") or {"architecture": config["architecture"], "os": "linux"}
    _write_layout_frame(
        tmp, {**manifest_desc, "platform": platform, "annotations": {REF_NAME: name}}
    )
    return manifest_desc


def derive_image(
    base_layout: Path,
    out_dir: Path,
    files: dict[str, tuple[bytes, int] | None],
    *,
    labels: dict[str, str],
    epoch: int,
) -> Path:
    """A layout in out_dir/oci: the base image plus one layer that writes `files` (path ->
    (content, mode), or None: a whiteout that deletes the path), with `labels` merged
    into the config. As `FROM base` plus `COPY` would make it: the base layers are shared
    as they are, so a pull of the derived image by a machine that has the base is small."""
    tmp = _fresh_tmp_layout(Path(out_dir))
    raw = tmp / "layer.tar"
    with tarfile.open(raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, entry in sorted(files.items()):
            folder, name = os.path.split(path.strip("/"))
            content, mode = entry or (b"", 0o644)
            info = tarfile.TarInfo(os.path.join(folder, name if entry else f".wh.{name}"))
            info.mtime, info.mode, info.size = epoch, mode, len(content)
            tar.addfile(info, io.BytesIO(content))
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        layer = gzip_layer(raw, Path(scratch), "derive_image")
        raw.unlink()
        _stack(base_layout, tmp, [layer], labels, epoch)
    layout = Path(out_dir) / LAYOUT_NAME
    _replace(tmp, layout)
    return layout


def write_derived_image(
    base_layout: Path,
    layout: Path,
    archive: Path,
    layers: list[NewLayer],
    *,
    labels: dict[str, str],
    epoch: int,
    container_config: dict | None = None,
    log: Callable[[str], None] = print,
) -> OciImage:
    """The base image plus `layers` as a layout folder and an archive at the given paths
    (as write_image writes a flavor's image)."""
    staging = layout.with_name(layout.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tmp = _fresh_tmp_layout(staging)
        manifest_desc = _stack(base_layout, tmp, layers, labels, epoch, container_config)
        layout_dir, built_archive = _finish(tmp, staging)
        layout_dir.rename(layout)
        built_archive.rename(archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sizes = " + ".join(f"{layer.blob.stat().st_size / 1e6:.2f}" for layer in layers)
    added = f"plus {sizes} MB" if layers else "and nothing more"
    log(f"oci: image {manifest_desc['digest'][:19]}: the base's layers {added} -> {archive}")
    return _image_of(layout, archive)
