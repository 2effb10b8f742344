"""Key-based image signatures in cosign's format, so `cosign verify --key cosign.pub` agrees.

A signature is ECDSA P-256 / SHA-256 over the exact bytes of a "simple signing" payload
that names the manifest digest; it is stored beside the image by toolkit.registry.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cos import signature
from cos.signature import make_payload
from toolkit import paths
from toolkit.errors import CosError

PRIVATE_KEY_NAME = "cosign.key"
PUBLIC_KEY_NAME = "cosign.pub"


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Create path with data unless it exists; False if another process got there first."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # link, unlike rename, never replaces an existing key
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _public_pem(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_private(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CosError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise CosError(f"{path}: expected an ECDSA P-256 key")
    return key


def ensure_keypair(keys_dir: Path | None = None) -> tuple[Path, Path]:
    """(private, public) PEM paths in keys_dir, creating the pair on first use."""
    keys_dir = Path(keys_dir) if keys_dir else paths.keys_dir()
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = keys_dir / PRIVATE_KEY_NAME, keys_dir / PUBLIC_KEY_NAME
    if not private_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(private_path, pem, 0o600)
    if not public_path.exists():
        _write_new(public_path, _public_pem(_load_private(private_path)), 0o644)
    return private_path, public_path


def sign_digest(docker_reference: str, digest: str, private_key: Path) -> tuple[bytes, str]:
    """(payload, base64 signature) for the image `digest` in repository docker_reference."""
    payload = make_payload(docker_reference, digest)
    signature = _load_private(Path(private_key)).sign(payload, ec.ECDSA(hashes.SHA256()))
    return payload, base64.b64encode(signature).decode()


def verify(
    payload: bytes, signature_b64: str, public_key: Path | bytes, expected_digest: str
) -> None:
    """Raise CosError unless the signature is the key's over payload AND payload names
    expected_digest: the machines' own check (cos.signature), given a key file or PEM."""
    where = "public key" if isinstance(public_key, bytes) else str(public_key)
    try:
        pem = public_key if isinstance(public_key, bytes) else Path(public_key).read_bytes()
    except OSError as e:
        raise CosError(f"{where}: not a PEM public key ({e})") from None
    signature.verify(payload, signature_b64, pem, expected_digest, where=where)
