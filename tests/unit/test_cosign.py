"""cosign-format signatures: the key pair, the payload bytes, and every way verify refuses."""

import base64
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cos import signature
from toolkit import cosign
from toolkit.errors import CosError

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
REPO = "127.0.0.1:5000/cos/debian-trixie"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return cosign.ensure_keypair(tmp_path / "keys")


def test_keypair_created_once(tmp_path: Path) -> None:
    private, public = cosign.ensure_keypair(tmp_path / "keys")
    assert (private.name, public.name) == ("cosign.key", "cosign.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes()  # unencrypted PKCS#8
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = private.read_bytes(), public.read_bytes()
    assert cosign.ensure_keypair(tmp_path / "keys") == (private, public)
    assert (private.read_bytes(), public.read_bytes()) == before
    public.unlink()  # a lost public key is derived again from the private one
    cosign.ensure_keypair(tmp_path / "keys")
    assert public.read_bytes() == before[1]


def test_default_keys_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COS_KEYS_DIR", str(tmp_path / "k"))
    private, _ = cosign.ensure_keypair()
    assert private == tmp_path / "k" / "cosign.key"


def test_payload_is_cosign_simple_signing() -> None:
    payload = signature.make_payload(REPO + ":0.1.0", DIGEST)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/cos/debian-trixie"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("127.0.0.1:5000/cos/x:0.1.0", "127.0.0.1:5000/cos/x"),
        ("127.0.0.1:5000/cos/x", "127.0.0.1:5000/cos/x"),
        ("localhost:5000/cos/x@" + DIGEST, "localhost:5000/cos/x"),
        ("localhost/cos/x:tag@" + DIGEST, "localhost/cos/x"),
    ],
)
def test_repository_of(reference: str, repository: str) -> None:
    assert signature.repository_of(reference) == repository


def test_good_signature_verifies(keys: tuple[Path, Path]) -> None:
    private, public = keys
    payload, signature = cosign.sign_digest(REPO, DIGEST, private)
    cosign.verify(payload, signature, public, DIGEST)
    cosign.verify(payload, signature, public.read_bytes(), DIGEST)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_agrees(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    # An independent ECDSA-SHA256 check of the same bytes, as cosign's verifier does.
    private, public = keys
    payload, signature = cosign.sign_digest(REPO, DIGEST, private)
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(signature))
    subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(public),
            "-signature",
            str(tmp_path / "sig"),
            str(tmp_path / "payload"),
        ],
        check=True,
        capture_output=True,
    )


def test_tampered_payload_fails(keys: tuple[Path, Path]) -> None:
    private, public = keys
    payload, signature = cosign.sign_digest(REPO, DIGEST, private)
    tampered = payload.replace(DIGEST.encode(), OTHER_DIGEST.encode())
    with pytest.raises(CosError, match="bad signature"):
        cosign.verify(tampered, signature, public, OTHER_DIGEST)


def test_wrong_key_fails(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, _ = keys
    _, other_public = cosign.ensure_keypair(tmp_path / "other")
    payload, signature = cosign.sign_digest(REPO, DIGEST, private)
    with pytest.raises(CosError, match=f"bad signature.*{other_public}"):
        cosign.verify(payload, signature, other_public, DIGEST)


def test_digest_mismatch_fails(keys: tuple[Path, Path]) -> None:
    private, public = keys
    payload, signature = cosign.sign_digest(REPO, DIGEST, private)
    with pytest.raises(CosError, match=f"digest mismatch.*{DIGEST}.*{OTHER_DIGEST}"):
        cosign.verify(payload, signature, public, OTHER_DIGEST)


def _sign_raw(private: Path, payload: bytes) -> str:
    key = cosign._load_private(private)
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def test_malformed_payload_fails(keys: tuple[Path, Path]) -> None:
    private, public = keys
    with pytest.raises(CosError, match="malformed signature payload: not JSON"):
        cosign.verify(b"not json", _sign_raw(private, b"not json"), public, DIGEST)
    no_digest = json.dumps({"critical": {"type": signature.SIGNATURE_TYPE}}).encode()
    with pytest.raises(CosError, match="malformed signature payload"):
        cosign.verify(no_digest, _sign_raw(private, no_digest), public, DIGEST)
    wrong_type = json.dumps(
        {"critical": {"image": {"docker-manifest-digest": DIGEST}, "type": "x"}}
    ).encode()
    with pytest.raises(CosError, match="malformed signature payload: type"):
        cosign.verify(wrong_type, _sign_raw(private, wrong_type), public, DIGEST)


def test_bad_signature_encoding_and_key(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    payload, _ = cosign.sign_digest(REPO, DIGEST, private)
    with pytest.raises(CosError, match="base64"):
        cosign.verify(payload, "%%%", public, DIGEST)
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    with pytest.raises(CosError, match="junk.pub: not a PEM public key"):
        cosign.verify(payload, "AAAA", junk, DIGEST)
    with pytest.raises(CosError, match="not a sha256 manifest digest"):
        cosign.sign_digest(REPO, "latest", private)
