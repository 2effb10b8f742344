"""The harness's SSH key: one ed25519 key per build folder, made on first use."""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from toolkit import paths


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: str  # the authorized_keys line


def ssh_key_dir() -> Path:
    return paths.build_dir() / "vm" / "ssh"


def harness_key(folder: Path | None = None) -> SshKey:
    folder = folder or ssh_key_dir()
    private, public = folder / "id_ed25519", folder / "id_ed25519.pub"
    if not private.is_file():
        _generate(folder)
    return SshKey(private, public.read_text().strip())


def _generate(folder: Path) -> None:
    """Write both files in a temporary folder and rename it into place: the rename is
    atomic and fails when another worker won the race, whose key we then use."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ssh-", dir=folder.parent))
    (tmp / "id_ed25519").write_bytes(private)
    os.chmod(tmp / "id_ed25519", 0o600)
    (tmp / "id_ed25519.pub").write_bytes(public + b" cos-test-harness\n")
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "id_ed25519").is_file():
            raise
