"""The project's apt signing key: created once with gpg, then used to sign repository indexes.

The key lives in a GnuPG home under the keys directory (COS_KEYS_DIR, folder `apt-gnupg`).
gpg itself always runs in a short-lived copy of that home under /tmp: gpg-agent puts its
socket in the home directory, and socket paths longer than ~108 bytes (deep checkouts,
pytest tmp dirs) fail. The agent is stopped afterwards, so no daemon is left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toolkit import paths
from toolkit.errors import CosError

KEY_UID = "cOS archive signing key <cos-dev@lists.invalid>"
HOME_NAME = "apt-gnupg"
_NO_PASSPHRASE = ("--pinentry-mode", "loopback", "--passphrase", "")


@dataclass(frozen=True)
class SigningKey:
    home: Path  # the stored GnuPG home
    fingerprint: str


class _Session:
    """gpg run against a throw-away GnuPG home (see the module docstring for why)."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}

    def run(self, *args: str) -> bytes:
        gpg = shutil.which("gpg")
        if gpg is None:
            raise CosError("gpg not found: install it (apt-get install gnupg)")
        proc = subprocess.run(
            [gpg, "--batch", "--no-tty", "--quiet", *args],
            env=self.env,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip()
            shown = " ".join(a for a in args if a not in _NO_PASSPHRASE)
            raise CosError(f"gpg {shown} failed (exit {proc.returncode}): {detail}")
        return proc.stdout

    def fingerprint(self) -> str:
        for line in self.run("--with-colons", "--list-secret-keys").decode().splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise CosError(f"{self.home}: GnuPG home holds no secret key")


_IGNORE = shutil.ignore_patterns("S.*", "*.lock", ".#*", "random_seed")


@contextmanager
def _session(stored_home: Path | None) -> Iterator[_Session]:
    work = Path(tempfile.mkdtemp(prefix="cosgpg-"))
    home = work / "h"
    try:
        if stored_home is not None:
            shutil.copytree(stored_home, home, ignore=_IGNORE)
        else:
            home.mkdir()
        home.chmod(0o700)
        session = _Session(home)
        yield session
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf and home.exists():
            subprocess.run(
                [gpgconf, "--kill", "all"],
                env={**os.environ, "GNUPGHOME": str(home)},
                capture_output=True,
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)


def ensure_key(keys_dir: Path | None = None, log: Callable[[str], None] = print) -> SigningKey:
    """The apt signing key, created on first use (ed25519, no passphrase, no expiry)."""
    root = keys_dir or paths.keys_dir()
    stored = root / HOME_NAME
    if stored.is_dir():
        with _session(stored) as gpg:
            return SigningKey(stored, gpg.fingerprint())

    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{HOME_NAME}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with _session(None) as gpg:
            gpg.run(*_NO_PASSPHRASE, "--quick-generate-key", KEY_UID, "ed25519", "sign", "never")
            fingerprint = gpg.fingerprint()
            shutil.copytree(gpg.home, staging, ignore=_IGNORE)
        staging.chmod(0o700)
        try:
            staging.rename(stored)  # atomic: nobody ever sees a half-made key
        except OSError:
            if not stored.is_dir():
                raise
            # Another build created the key at the same moment: use theirs.
            return ensure_key(root, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"created apt signing key {fingerprint} in {stored}")
    return SigningKey(stored, fingerprint)


def _sign(key: SigningKey, src: Path, dest: Path, *mode: str) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    with _session(key.home) as gpg:
        gpg.run(
            *_NO_PASSPHRASE,
            "--yes",
            "--local-user",
            key.fingerprint,
            "--digest-algo",
            "SHA512",
            *mode,
            "--output",
            str(tmp),
            str(src),
        )
    os.replace(tmp, dest)


def clearsign(key: SigningKey, src: Path, dest: Path) -> None:
    """Write `dest` as the clearsigned form of `src` (apt's InRelease)."""
    _sign(key, src, dest, "--clearsign")


def detach_sign(key: SigningKey, src: Path, dest: Path) -> None:
    """Write an armored detached signature of `src` to `dest` (apt's Release.gpg)."""
    _sign(key, src, dest, "--armor", "--detach-sign")


def export_public(key: SigningKey, dest_gpg: Path, dest_asc: Path) -> None:
    """The public key as a binary keyring (apt signed-by=) and as armored text."""
    binary = public_key_bytes(key)
    with _session(key.home) as gpg:
        armored = gpg.run("--armor", "--export", key.fingerprint)
    for dest, data in ((dest_gpg, binary), (dest_asc, armored)):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)


def public_key_bytes(key: SigningKey) -> bytes:
    """The binary public key (what export_public writes as .gpg)."""
    with _session(key.home) as gpg:
        data = gpg.run("--export", key.fingerprint)
    if not data:  # gpg exits 0 when it exports nothing
        raise CosError(f"{key.home}: no public key {key.fingerprint}")
    return data
