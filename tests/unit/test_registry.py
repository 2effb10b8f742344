"""A real docker-registry on a free 127.0.0.1 port: push, resolve, signatures, failures."""

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_registry import free_port, quiet

from toolkit import cosign, oci, registry
from toolkit.errors import CosError

pytestmark = [
    pytest.mark.skipif(
        shutil.which(registry.REGISTRY_BINARY) is None,
        reason="docker-registry is not installed (apt-get install docker-registry)",
    ),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed"),
]

EPOCH = 1714564800  # 2024-05-01T12:00:00Z


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    storage = tmp_path_factory.mktemp("registry")
    yield registry.start_registry(storage, port=free_port(), log=quiet)
    registry.stop_registry(storage, log=quiet)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, oci.OciImage]:
    work = tmp_path_factory.mktemp("images")
    root = work / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\n")
    built = {}
    for arch in ("amd64", "arm64"):
        labels = {"org.opencontainers.image.version": "0.1.0", "io.cos.flavor": "debian-trixie"}
        built[arch] = oci.build_oci_image(
            root, work / arch, arch_oci=arch, labels=labels, epoch=EPOCH, log=quiet
        )
    return built


def test_push_image_and_read_back(
    address: str, images: dict[str, oci.OciImage], tmp_path: Path
) -> None:
    image = images["amd64"]
    reference = f"{address}/cos/debian-trixie:0.1.0"
    digest = registry.push_layout(image.layout_dir, reference)
    assert digest == image.manifest_digest
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{reference}"))
    assert info["Digest"] == digest
    assert info["Architecture"] == "amd64"
    assert info["Labels"]["io.cos.flavor"] == "debian-trixie"
    assert registry.resolve_digest(reference) == digest
    assert registry.resolve_digest(f"{address}/cos/debian-trixie@{digest}") == digest
    # skopeo pulls every blob back and checks its digest.
    skopeo(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{reference}",
        f"dir:{tmp_path / 'pulled'}",
    )
    # Pushing again is cheap and changes nothing.
    assert registry.push_layout(image.layout_dir, reference) == digest


def test_push_multi_arch_index(
    address: str, images: dict[str, oci.OciImage], tmp_path: Path
) -> None:
    layout = oci.build_index(images, tmp_path / "multi")
    reference = f"{address}/cos/multi:0.1.0"
    digest = registry.push_layout(layout, reference)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}")
    index = json.loads(raw)
    assert index["mediaType"] == oci.MEDIA_INDEX
    assert {m["platform"]["architecture"] for m in index["manifests"]} == {"amd64", "arm64"}
    assert registry.resolve_digest(reference) == digest
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64", f"docker://{reference}")
    )
    assert info["Digest"] == digest and info["Architecture"] == "arm64"
    media_type, _, got = registry.get_manifest(reference)
    assert (media_type, got) == (oci.MEDIA_INDEX, digest)


def test_signature_round_trip(
    address: str, images: dict[str, oci.OciImage], tmp_path: Path
) -> None:
    image = images["arm64"]
    reference = f"{address}/cos/signed:0.1.0"
    digest = registry.push_layout(image.layout_dir, reference)
    private, public = cosign.ensure_keypair(tmp_path / "keys")
    payload, signature = cosign.sign_digest(reference, digest, private)
    registry.push_signature(reference, digest, payload, signature)

    assert registry.fetch_signature(f"{address}/cos/signed", digest) == (payload, signature)
    cosign.verify(*registry.fetch_signature(reference, digest), public, digest)

    # Stored where and how cosign stores it.
    sig_tag = f"docker://{address}/cos/signed:{digest.replace(':', '-')}.sig"
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", sig_tag))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer["annotations"]["dev.cosignproject.cosign/signature"] == signature

    # A second key's signature is added beside the first; the same one twice is not.
    other_private, _ = cosign.ensure_keypair(tmp_path / "other")
    payload2, signature2 = cosign.sign_digest(reference, digest, other_private)
    registry.push_signature(reference, digest, payload2, signature2)
    registry.push_signature(reference, digest, payload2, signature2)
    assert registry.fetch_signatures(reference, digest) == [
        (payload, signature),
        (payload2, signature2),
    ]


def test_missing_image_and_signature(address: str) -> None:
    with pytest.raises(CosError, match="no such image"):
        registry.resolve_digest(f"{address}/cos/absent:0.1.0")
    with pytest.raises(CosError, match="has no signature"):
        registry.fetch_signature(f"{address}/cos/absent", "sha256:" + "0" * 64)


def test_http_error_names_url_and_status(address: str, images: dict[str, oci.OciImage]) -> None:
    # Upper case is not a valid repository name: the registry answers 4xx.
    with pytest.raises(CosError, match=rf"http://{address}/v2/cos/Bad/.*HTTP 4\d\d"):
        registry.push_layout(images["amd64"].layout_dir, f"{address}/cos/Bad:1")


def test_start_is_idempotent(tmp_path: Path) -> None:
    port = free_port()
    first = registry.start_registry(tmp_path, port=port, log=quiet)
    try:
        pid = json.loads((tmp_path / "registry.pid").read_text())["pid"]
        assert registry.start_registry(tmp_path, port=port, log=quiet) == first
        assert json.loads((tmp_path / "registry.pid").read_text())["pid"] == pid
        with pytest.raises(CosError, match=f"already runs on port {port}"):
            registry.start_registry(tmp_path, port=free_port(), log=quiet)
        with pytest.raises(CosError, match=f"port {port} on 127.0.0.1 is taken"):
            registry.start_registry(tmp_path / "other", port=port, log=quiet)
    finally:
        assert registry.stop_registry(tmp_path, log=quiet)
    assert not (tmp_path / "registry.pid").exists()
    assert not registry.stop_registry(tmp_path, log=quiet)


def test_stopped_registry_gives_clear_error(
    tmp_path: Path, images: dict[str, oci.OciImage]
) -> None:
    address = registry.start_registry(tmp_path, port=free_port(), log=quiet)
    registry.stop_registry(tmp_path, log=quiet)
    expected = rf"registry at {address} is not answering: .*refused"
    with pytest.raises(CosError, match=expected):
        registry.push_layout(images["amd64"].layout_dir, f"{address}/cos/x:1")
    with pytest.raises(CosError, match=expected):
        registry.resolve_digest(f"{address}/cos/x:1")


def test_reference_needs_a_host() -> None:
    with pytest.raises(CosError, match="needs a registry host"):
        registry.parse_reference("cos/debian:1")
    assert registry.parse_reference("127.0.0.1:5000/cos/d:1") == ("127.0.0.1:5000", "cos/d", "1")
    assert registry.parse_reference("localhost:5000/d") == ("localhost:5000", "d", "latest")
