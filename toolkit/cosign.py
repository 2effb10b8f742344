"""Key-based image signatures in cosign's format, so `cosign verify --key cosign.pub` agrees.

A signature is ECDSA P-256 / SHA-256 over the exact bytes of a "simple signing" payload
that names the manifest digest; it is stored beside the image by toolkit.registry.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from toolkit import paths
from toolkit.errors import CosError

SIGNATURE_TYPE = "cosign container image signature"
PRIVATE_KEY_NAME = "cosign.key"
PUBLIC_KEY_NAME = "cosign.pub"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


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


def repository_of(reference: str) -> str:
    """'host:port/repo:tag' or 'host/repo@sha256:..' -> 'host:port/repo' (cosign's identity)."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def make_payload(docker_reference: str, digest: str) -> bytes:
    if not _DIGEST_RE.fullmatch(digest):
        raise CosError(f"not a sha256 manifest digest: {digest!r}")
    # Key order and compact separators as cosign's Go encoder writes them.
    payload = {
        "critical": {
            "identity": {"docker-reference": repository_of(docker_reference)},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": None,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def sign_digest(docker_reference: str, digest: str, private_key: Path) -> tuple[bytes, str]:
    """(payload, base64 signature) for the image `digest` in repository docker_reference."""
    payload = make_payload(docker_reference, digest)
    signature = _load_private(Path(private_key)).sign(payload, ec.ECDSA(hashes.SHA256()))
    return payload, base64.b64encode(signature).decode()


def _load_public(public_key: Path | bytes) -> tuple[ec.EllipticCurvePublicKey, str]:
    where = "public key" if isinstance(public_key, bytes) else str(public_key)
    try:
        pem = public_key if isinstance(public_key, bytes) else Path(public_key).read_bytes()
        key = serialization.load_pem_public_key(pem)
    except (OSError, ValueError, TypeError) as e:
        raise CosError(f"{where}: not a PEM public key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CosError(f"{where}: not an ECDSA public key")
    return key, where


def verify(
    payload: bytes, signature_b64: str, public_key: Path | bytes, expected_digest: str
) -> None:
    """Raise CosError unless the signature is the key's over payload AND payload names
    expected_digest (a valid signature for another image must not pass)."""
    key, where = _load_public(public_key)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CosError("signature is not valid base64") from None
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CosError(
            f"bad signature: it does not verify with {where} "
            "(payload altered, or signed with another key)"
        ) from None
    try:
        document = json.loads(payload)
    except ValueError as e:
        raise CosError(f"malformed signature payload: not JSON ({e})") from None
    try:
        critical = document["critical"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        kind = critical["type"]
    except (KeyError, TypeError):
        raise CosError(
            "malformed signature payload: needs critical.image.docker-manifest-digest "
            "and critical.type"
        ) from None
    if kind != SIGNATURE_TYPE:
        raise CosError(f"malformed signature payload: type is {kind!r}, not {SIGNATURE_TYPE!r}")
    if signed_digest != expected_digest:
        raise CosError(
            f"digest mismatch: signature is for {signed_digest}, image is {expected_digest}"
        )
