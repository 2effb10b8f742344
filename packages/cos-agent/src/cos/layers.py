"""Applying OCI image layers (gzip tar streams) to a root folder, as container engines
do: in order, with whiteouts (`.wh.NAME` removes NAME of a lower layer, `.wh..wh..opq`
empties a folder of lower layers' content), numeric owners, modes, links and extended
attributes (file capabilities among them) from PAX `SCHILY.xattr.*` records."""

import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cos.errors import CosError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
XATTR = "SCHILY.xattr."


class ChunkReader:
    """A read-only file over an iterator of gzip-compressed chunks, giving the raw bytes
    (zlib in C: tarfile's own gzip reader would be slower under emulation)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buffer = bytearray()
        self.compressed = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._buffer += self._inflate.flush()
                break
            self.compressed += len(chunk)
            self._buffer += self._inflate.decompress(chunk)
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def drain(self) -> None:
        """Read to the end, so the stream's digest check runs even past tar's end marker."""
        while self.read(1 << 20):
            pass


def _relative(name: str, what: str) -> str:
    path = posixpath.normpath("/" + name).lstrip("/")
    if not path or path == ".":
        return ""
    if name.startswith("/") or ".." in name.split("/"):
        raise CosError(f"{what}: entry {name!r} points outside the image")
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _empty_folder(folder: Path, keep: set[str], root: Path) -> None:
    """An opaque folder: remove what lower layers put there, not this layer's entries."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for entry in folder.iterdir():
        if str(entry.relative_to(root)) not in keep:
            _remove(entry)


def _set_xattrs(target: Path, member: tarfile.TarInfo, what: str) -> None:
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR):
            name, raw = key[len(XATTR) :], value.encode("utf-8", "surrogateescape")
            try:
                os.setxattr(target, name, raw, follow_symlinks=False)
            except OSError as e:
                raise CosError(f"{what}: cannot set {name} on {member.name}: {e}") from None


@dataclass
class Applied:
    """What applying a layer did: enough to take it off again while it only added."""

    compressed: int  # bytes of the layer as pulled
    paths: list[str]  # entries it wrote, in order
    added_only: bool  # it replaced or removed nothing a lower layer had


def apply_layer(chunks: Iterator[bytes], root: Path, what: str) -> Applied:
    """Apply one gzip tar layer over `root`. A broken stream, a digest mismatch (raised
    by `chunks`) or a bad entry is a CosError."""
    reader = ChunkReader(chunks)
    written: set[str] = set()
    paths: list[str] = []
    added_only = True
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                path, replaced = _apply_member(tar, member, root, written, what)
                if path:
                    paths.append(path)
                added_only = added_only and not replaced
        reader.drain()
    except (tarfile.TarError, zlib.error, EOFError) as e:
        raise CosError(f"{what}: not a valid gzip tar layer: {e}") from None
    return Applied(reader.compressed, paths, added_only)


def remove_added(root: Path, paths: list[str]) -> None:
    """Take off a layer that only added `paths` (children before their folders)."""
    for path in sorted(paths, reverse=True):
        _remove(root / path)


def _apply_member(
    tar, member: tarfile.TarInfo, root: Path, written: set[str], what: str
) -> tuple[str, bool]:
    """(the path written or "", whether it replaced or removed a lower layer's entry)."""
    path = _relative(member.name, what)
    if not path:
        return "", False
    folder, base = posixpath.split(path)
    if base == OPAQUE:
        _empty_folder(root / folder, written, root)
        return "", True
    if base.startswith(WHITEOUT):
        _remove(root / folder / base[len(WHITEOUT) :])
        return "", True
    target = root / path
    # an entry already there, put by a lower layer (not earlier in this one)
    replaced = (target.is_symlink() or target.exists()) and path not in written
    if target.is_symlink() or (target.exists() and not (member.isdir() and target.is_dir())):
        _remove(target)  # a lower layer's entry of another kind, or a file replaced
    if member.islnk():
        member.linkname = _relative(member.linkname, what)
    try:
        tar.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")
    except TypeError:  # Python before 3.11.4 has no extraction filters (and needs none)
        tar.extract(member, root, set_attrs=True, numeric_owner=True)
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            raise CosError(f"{what}: the new system does not fit: {e}") from None
        raise CosError(f"{what}: cannot write {member.name}: {e}") from None
    _set_xattrs(target, member, what)
    written.add(path)
    return path, replaced
