"""A signed apt repository from a set of .deb files.

Layout (suite and codename `cos`, one component `main`)::

    pool/main/<initial>/<package>/<file>.deb
    dists/cos/main/binary-{amd64,arm64}/Packages(.gz)   # arch "all" packages in both
    dists/cos/Release, InRelease (clearsigned), Release.gpg (detached, armored)
    cos-archive-keyring.gpg / .asc                       # public key, for apt's signed-by=

Everything but the two signatures is a pure function of the .deb files, the key and
SOURCE_DATE_EPOCH. The repository is assembled in a temporary folder and renamed into
place, and it is left untouched when nothing would change, so its files are byte-stable
on a no-op rebuild.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit import gpgkey
from toolkit.debfile import parse_control, read_control
from toolkit.errors import CosError
from toolkit.reproducible import source_date_epoch

ARCHES = ("amd64", "arm64")
SUITE = "cos"
COMPONENT = "main"
KEYRING_NAME = "cos-archive-keyring"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Published:
    repo_dir: Path
    keyring: Path  # binary public keyring, for signed-by=
    keyring_asc: Path
    changed: bool  # False: the repository already had exactly this content
    content_hash: str  # sha256 over Release and the key: stable while the content is


@dataclass(frozen=True)
class _Deb:
    source: Path
    fields: dict[str, str]
    pool_path: str  # relative to the repository root

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return self.fields["Package"], self.fields["Version"], self.fields["Architecture"]


def release_date(epoch: int) -> str:
    """RFC 2822 date in UTC, independent of the locale (strftime's %a/%b are not)."""
    t = time.gmtime(epoch)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} UTC"
    )


def _pool_path(fields: dict[str, str], filename: str) -> str:
    name = fields["Package"]
    initial = name[:4] if name.startswith("lib") else name[0]  # Debian's pool convention
    return f"pool/{COMPONENT}/{initial}/{name}/{filename}"


def _read_debs(debs: list[Path]) -> list[_Deb]:
    found: dict[tuple[str, str, str], _Deb] = {}
    for path in debs:
        fields = parse_control(read_control(path))
        for key in ("Package", "Version", "Architecture"):
            if key not in fields:
                raise CosError(f"{path}: control has no {key} field")
        arch = fields["Architecture"]
        if arch != "all" and arch not in ARCHES:
            raise CosError(
                f"{path}: architecture {arch!r} is not in this repository "
                f"({', '.join(ARCHES)}, all)"
            )
        deb = _Deb(path, fields, _pool_path(fields, path.name))
        if deb.sort_key in found:
            raise CosError(
                f"{path} and {found[deb.sort_key].source}: same package, version "
                f"and architecture {'_'.join(deb.sort_key)}"
            )
        found[deb.sort_key] = deb
    return sorted(found.values(), key=lambda deb: deb.sort_key)


def _stanza(deb: _Deb) -> str:
    data = deb.source.read_bytes()
    extra = {
        "Filename": deb.pool_path,
        "Size": str(len(data)),
        "MD5sum": hashlib.md5(data).hexdigest(),
        "SHA256": hashlib.sha256(data).hexdigest(),
    }
    fields = {k: v for k, v in deb.fields.items() if k != "Description"}
    fields.update(extra)
    if "Description" in deb.fields:
        fields["Description"] = deb.fields["Description"]  # last, as apt-ftparchive does
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def _gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    # No name and mtime 0 in the header: the same input gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buffer.getvalue()


def _indexes(debs: list[_Deb]) -> dict[str, bytes]:
    """Index files by path relative to dists/<suite>/."""
    stanzas = {deb.sort_key: _stanza(deb) for deb in debs}
    files: dict[str, bytes] = {}
    for arch in ARCHES:
        text = "\n".join(
            stanzas[deb.sort_key] for deb in debs if deb.fields["Architecture"] in (arch, "all")
        )
        packages = text.encode()
        files[f"{COMPONENT}/binary-{arch}/Packages"] = packages
        files[f"{COMPONENT}/binary-{arch}/Packages.gz"] = _gzip(packages)
    return files


def _release(indexes: dict[str, bytes], epoch: int) -> bytes:
    lines = [
        "Origin: cOS",
        "Label: cOS",
        f"Suite: {SUITE}",
        f"Codename: {SUITE}",
        f"Date: {release_date(epoch)}",
        f"Architectures: {' '.join(ARCHES)}",
        f"Components: {COMPONENT}",
        "Description: cOS packages",
    ]
    for title, algo in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        lines.append(f"{title}:")
        lines.extend(
            f" {algo(data).hexdigest()} {len(data):>8} {name}"
            for name, data in sorted(indexes.items())
        )
    return ("\n".join(lines) + "\n").encode()


def _is_current(repo_dir: Path, debs: list[_Deb], release: bytes, keyring: bytes) -> bool:
    dists = repo_dir / "dists" / SUITE
    try:
        if (dists / "Release").read_bytes() != release:
            return False
        if (repo_dir / f"{KEYRING_NAME}.gpg").read_bytes() != keyring:
            return False
    except FileNotFoundError:
        return False
    needed = [dists / "InRelease", dists / "Release.gpg", repo_dir / f"{KEYRING_NAME}.asc"]
    if not all(path.is_file() for path in needed):
        return False
    # Release pins the Packages files, which pin each .deb's hash; check the pool is whole.
    return all(
        (repo_dir / deb.pool_path).is_file()
        and (repo_dir / deb.pool_path).stat().st_size == deb.source.stat().st_size
        for deb in debs
    )


def _assemble(
    tmp: Path, debs: list[_Deb], indexes: dict[str, bytes], release: bytes, key: gpgkey.SigningKey
) -> None:
    for deb in debs:
        dest = tmp / deb.pool_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb.source, dest)
    dists = tmp / "dists" / SUITE
    for name, data in indexes.items():
        (dists / name).parent.mkdir(parents=True, exist_ok=True)
        (dists / name).write_bytes(data)
    (dists / "Release").write_bytes(release)
    gpgkey.clearsign(key, dists / "Release", dists / "InRelease")
    gpgkey.detach_sign(key, dists / "Release", dists / "Release.gpg")
    gpgkey.export_public(key, tmp / f"{KEYRING_NAME}.gpg", tmp / f"{KEYRING_NAME}.asc")


def _swap_in(tmp: Path, repo_dir: Path) -> None:
    """Replace repo_dir by tmp; the old repository is removed only once the new one is there."""
    old = repo_dir.with_name(f".{repo_dir.name}.old-{os.getpid()}")
    if repo_dir.exists() or repo_dir.is_symlink():
        repo_dir.rename(old)
    try:
        tmp.rename(repo_dir)
    except BaseException:
        if old.exists():
            old.rename(repo_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_repository(
    debs: list[Path], repo_dir: Path, key: gpgkey.SigningKey, epoch: int | None = None
) -> Published:
    """Publish exactly `debs` as the repository at repo_dir, unless it is already that."""
    if not debs:
        raise CosError(f"{repo_dir}: no .deb files to publish")
    epoch = source_date_epoch() if epoch is None else epoch
    entries = _read_debs(debs)
    indexes = _indexes(entries)
    release = _release(indexes, epoch)
    keyring = gpgkey.public_key_bytes(key)
    content_hash = hashlib.sha256(release + b"\0" + keyring).hexdigest()
    result = Published(
        repo_dir,
        repo_dir / f"{KEYRING_NAME}.gpg",
        repo_dir / f"{KEYRING_NAME}.asc",
        False,
        content_hash,
    )
    if _is_current(repo_dir, entries, release, keyring):
        return result

    repo_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = repo_dir.with_name(f".{repo_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _assemble(tmp, entries, indexes, release, key)
        _swap_in(tmp, repo_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Published(result.repo_dir, result.keyring, result.keyring_asc, True, content_hash)
