"""Write (and read back the control of) a Debian binary package in pure Python.

A .deb is an ar archive of three members: `debian-binary`, `control.tar.xz` and
`data.tar.xz`. Everything here is reproducible: entries are sorted, every timestamp is the
given epoch, owners are root:root, and xz/gzip streams carry no timestamps, so the same
inputs always give a byte-identical file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from toolkit.errors import CosError
from toolkit.reproducible import source_date_epoch

MAINTAINER_SCRIPTS = ("preinst", "postinst", "prerm", "postrm")


@dataclass(frozen=True)
class DebEntry:
    """One thing installed by the package; parent directories are added automatically."""

    path: str  # absolute, e.g. /usr/bin/cos
    mode: int  # permission bits, e.g. 0o755
    data: bytes | None = None  # file content; None with link=None means a directory
    link: str | None = None  # symlink target

    @property
    def is_dir(self) -> bool:
        return self.data is None and self.link is None


def format_control(fields: dict[str, str]) -> str:
    """Render control fields; multi-line values (Description) get Debian's continuation form."""
    lines = []
    for key, value in fields.items():
        first, *rest = value.rstrip("\n").split("\n")
        lines.append(f"{key}: {first.strip()}".rstrip())
        lines.extend(f" {line.rstrip()}" if line.strip() else " ." for line in rest)
    return "\n".join(lines) + "\n"


def _member_path(path: str) -> str:
    """'/usr/bin/x' -> 'usr/bin/x', refusing anything that escapes the root."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts or len(pure.parts) < 2:
        raise CosError(f"package entry {path!r}: must be an absolute path below /")
    return str(pure.relative_to("/"))


def _with_parents(entries: list[DebEntry]) -> dict[str, DebEntry]:
    """Index entries by relative path, adding every missing parent directory (0755)."""
    by_path: dict[str, DebEntry] = {}
    for entry in entries:
        rel = _member_path(entry.path)
        if rel in by_path and not (by_path[rel].is_dir and entry.is_dir):
            raise CosError(f"package entry {entry.path}: listed twice")
        by_path[rel] = entry
    for rel in list(by_path):
        for parent in PurePosixPath(rel).parents:
            key = str(parent)
            if key == ".":
                continue
            if key in by_path and not by_path[key].is_dir:
                raise CosError(f"package entry /{key}: is a file but /{rel} is inside it")
            by_path.setdefault(key, DebEntry(path=f"/{key}", mode=0o755))
    return by_path


def _tar(members: list[tuple[str, int, bytes | None, str | None]], mtime: int) -> bytes:
    """A tar stream of (name, mode, data, link) with fixed owners and times, in given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, mode, data, link in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)


def _ar(members: list[tuple[str, bytes]], mtime: int) -> bytes:
    """Common ar format, as dpkg writes it: names without the GNU trailing slash."""
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name:<16}{mtime:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n"
        out.append(header.encode("ascii"))
        out.append(data)
        if len(data) % 2:
            out.append(b"\n")
    return b"".join(out)


def _kib(entry: DebEntry) -> int:
    # Like dpkg-gencontrol: file sizes rounded up to KiB, one KiB per directory or symlink.
    return -(-len(entry.data) // 1024) if entry.data is not None else 1


def _sort_key(rel: str) -> tuple[str, ...]:
    # By path components, so a directory always precedes its content.
    return tuple(rel.split("/"))


def build_deb(
    control: dict[str, str],
    entries: list[DebEntry],
    scripts: dict[str, bytes] | None = None,
    conffiles: list[str] | None = None,
    mtime: int | None = None,
) -> bytes:
    """The bytes of a .deb. `control` must not carry Installed-Size: it is computed here."""
    mtime = source_date_epoch() if mtime is None else mtime
    scripts = scripts or {}
    conffiles = conffiles or []
    by_path = _with_parents(entries)
    order = sorted(by_path, key=_sort_key)

    for name in scripts:
        if name not in MAINTAINER_SCRIPTS:
            raise CosError(
                f"unknown maintainer script {name!r}; valid: {', '.join(MAINTAINER_SCRIPTS)}"
            )
    for path in conffiles:
        entry = by_path.get(_member_path(path))
        if entry is None or entry.data is None:
            raise CosError(f"conffile {path}: not a regular file installed by the package")

    size_kib = sum(_kib(by_path[rel]) for rel in order)
    fields = dict(control)
    fields.pop("Installed-Size", None)
    ordered: dict[str, str] = {}
    for key, value in fields.items():
        ordered[key] = value
        if key == "Maintainer":
            ordered["Installed-Size"] = str(size_kib)
    ordered.setdefault("Installed-Size", str(size_kib))

    # dh_md5sums leaves conffiles out: dpkg tracks their hashes itself.
    conffile_rels = {_member_path(p) for p in conffiles}
    md5sums = "".join(
        f"{hashlib.md5(by_path[rel].data).hexdigest()}  {rel}\n"  # type: ignore[arg-type]
        for rel in order
        if by_path[rel].data is not None and rel not in conffile_rels
    )

    control_members: list[tuple[str, int, bytes | None, str | None]] = [("./", 0o755, None, None)]
    if conffiles:
        text = "".join(f"{PurePosixPath(p)}\n" for p in sorted(conffiles))
        control_members.append(("./conffiles", 0o644, text.encode(), None))
    control_members.append(("./control", 0o644, format_control(ordered).encode(), None))
    if md5sums:
        control_members.append(("./md5sums", 0o644, md5sums.encode(), None))
    for name in sorted(scripts):
        control_members.append((f"./{name}", 0o755, scripts[name], None))
    control_members.sort(key=lambda member: member[0])

    data_members: list[tuple[str, int, bytes | None, str | None]] = [("./", 0o755, None, None)]
    for rel in order:
        entry = by_path[rel]
        mode = 0o777 if entry.link is not None else entry.mode & 0o7777
        data_members.append((f"./{rel}", mode, entry.data, entry.link))

    return _ar(
        [
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", _xz(_tar(control_members, mtime))),
            ("data.tar.xz", _xz(_tar(data_members, mtime))),
        ],
        mtime,
    )


def write_deb(out: Path, *args, **kwargs) -> Path:
    """build_deb() written to `out` through a temporary file, so no half-written .deb exists."""
    data = build_deb(*args, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _ar_members(blob: bytes, source: Path) -> dict[str, bytes]:
    if not blob.startswith(b"!<arch>\n"):
        raise CosError(f"{source}: not a .deb (no ar header)")
    members: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise CosError(f"{source}: corrupt ar member header at offset {pos}") from None
        members[name] = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def read_control(deb: Path) -> str:
    """The text of ./control inside a .deb (xz, gzip or uncompressed control tarball)."""
    members = _ar_members(deb.read_bytes(), deb)
    decoders = {
        "control.tar.xz": lzma.decompress,
        "control.tar.gz": gzip.decompress,
        "control.tar": lambda data: data,
    }
    for name, decode in decoders.items():
        if name in members:
            with tarfile.open(fileobj=io.BytesIO(decode(members[name]))) as tar:
                for info in tar.getmembers():
                    if info.name in ("./control", "control"):
                        handle = tar.extractfile(info)
                        if handle is not None:
                            return handle.read().decode("utf-8")
            raise CosError(f"{deb}: {name} has no control file")
    raise CosError(f"{deb}: no supported control tarball (have: {', '.join(members)})")


def parse_control(text: str) -> dict[str, str]:
    """Control fields in file order; continuation lines kept as they are (with newlines)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key is not None:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields
