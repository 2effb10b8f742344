"""cosign's key-based signatures ("simple signing"): the payload that names a repository
and a manifest digest, and its check against a public key. The host signs with the same
payload format (toolkit.cosign); machines verify with the keys in /etc/cos/keys."""

import base64
import binascii
import json
import re

from cos.errors import CosError

SIGNATURE_TYPE = "cosign container image signature"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


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


def load_public_key(pem: bytes, where: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise CosError(f"{where}: not a PEM public key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CosError(f"{where}: not an ECDSA public key")
    return key


def verify(
    payload: bytes,
    signature_b64: str,
    public_key_pem: bytes,
    expected_digest: str,
    where: str = "public key",
    expected_repository: str | None = None,
) -> None:
    """Raise CosError unless the signature is the key's over payload AND payload names
    expected_digest (and, when given, the repository): a valid signature for another
    image must not pass."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = load_public_key(public_key_pem, where)
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
        identity = critical.get("identity", {}).get("docker-reference")
    except (KeyError, TypeError, AttributeError):
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
    if expected_repository is not None and identity != expected_repository:
        raise CosError(
            f"repository mismatch: signature is for {identity!r}, image is in "
            f"{expected_repository!r}"
        )
