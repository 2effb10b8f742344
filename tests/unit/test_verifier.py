"""Our signature check agrees with a maintained verifier. The same images, pushed to a
real docker-registry, are judged by Debian 13's skopeo (toolkit.verifier: a sigstore
policy with the project's public key) and by the machines' own code (cos.upgrade's
resolve and check_signature, then the digest-checked pull of every layer, as
`cos upgrade` does): signed, unsigned, signed with another key, and tampered in four
ways. Both must accept the signed image and refuse every other one.

The first run makes skopeo's tool tree (build/tools/skopeo-trixie, about 20 s with a
fresh download); if it cannot be made, the test fails with the reason."""

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from local_registry import free_port, quiet

from cos import registry, upgrade
from cos.errors import CosError
from toolkit import cosign, verifier
from toolkit import oci as toolkit_oci
from toolkit import registry as toolkit_registry
from toolkit.publish import push_signed

EPOCH = 1714564800


@dataclass
class Expected:
    accepted: bool
    skopeo_says: str  # regular expressions for each side's reason
    we_say: str


WRONG_KEY = "wrongly signed: .*does not verify"
EXPECTED = {
    "signed": Expected(True, "signature and digests verified", "signature verified"),
    "unsigned": Expected(False, "A signature was required", "unsigned: .* has no signature"),
    "other-key": Expected(False, "invalid signature", WRONG_KEY),
    "wrong-repository": Expected(False, "identity .* is not accepted", "repository mismatch"),
    "altered-payload": Expected(False, "invalid signature", WRONG_KEY),
    "borrowed-signature": Expected(
        False, "Signature for digest .* does not match", "digest mismatch: signature is for"
    ),
    "tampered-layer": Expected(False, "Digest did not match", "layer 1: tampered or corrupt"),
    "tampered-manifest": Expected(
        False, "Manifest does not match provided manifest digest", "tampered manifest"
    ),
}


def tiny_image(work: Path) -> Path:
    """An OCI layout with one layer of random bytes: every image has blobs of its own, so
    tampering with one in the registry's storage touches no other case."""
    root = work / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("VARIANT_ID=test\nIMAGE_VERSION=2.0.0\n")
    (root / "usr/share").mkdir(parents=True)
    (root / "usr/share/data").write_bytes(os.urandom(64 << 10))
    labels = {"org.opencontainers.image.version": "2.0.0", "io.cos.flavor": "test"}
    return toolkit_oci.build_oci_image(
        root, work / "out", arch_oci="amd64", labels=labels, epoch=EPOCH, log=quiet
    ).layout_dir


def stored_blob(storage: Path, digest: str) -> Path:
    hexdigest = digest.split(":")[1]
    return storage / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def skopeo_tree() -> Path:
    try:
        return verifier.ensure_skopeo(log=quiet)
    except CosError as e:
        pytest.fail(f"no maintained verifier to compare with: {e}", pytrace=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("keys")
    return cosign.ensure_keypair(base / "project"), cosign.ensure_keypair(base / "other")


@pytest.fixture(scope="module")
def cases(tmp_path_factory, keys) -> dict[str, str]:
    """Every case in one registry of this module's own."""
    (project, _), (other, _) = keys
    work = tmp_path_factory.mktemp("images")
    storage = work / "registry"
    try:
        address = toolkit_registry.start_registry(storage, port=free_port(), log=quiet)
    except CosError as e:
        pytest.fail(f"no registry to push the cases to: {e}", pytrace=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COS_KEYS_DIR", str(project.parent))
        yield publish_cases(work, storage, address, project, other, patch)
    toolkit_registry.stop_registry(storage, log=quiet)


def publish_cases(work, storage, address, project, other, patch) -> dict[str, str]:
    """Each case's reference (host:port/repo@digest)."""

    def at(repo: str, digest: str) -> str:
        return f"{address}/cos/{repo}@{digest}"

    def sign(repo: str, digest: str) -> tuple[bytes, str]:
        """The project key's signature naming repo and digest, as `invoke push` makes it."""
        return cosign.sign_digest(f"{address}/cos/{repo}:2.0.0", digest, project)

    image = tiny_image(work / "image")
    digest = push_signed(image, f"{address}/cos/signed", "2.0.0").digest
    toolkit_registry.push_layout(image, f"{address}/cos/unsigned:2.0.0")
    patch.setenv("COS_KEYS_DIR", str(other.parent))
    push_signed(image, f"{address}/cos/other-key", "2.0.0")
    patch.setenv("COS_KEYS_DIR", str(project.parent))

    # The project's key over this digest, but naming another repository.
    toolkit_registry.push_layout(image, f"{address}/cos/wrong-repository:2.0.0")
    toolkit_registry.push_signature(
        f"{address}/cos/wrong-repository", digest, *sign("elsewhere", digest)
    )
    # A signature whose payload was altered after signing (still the right digest).
    toolkit_registry.push_layout(image, f"{address}/cos/altered-payload:2.0.0")
    payload, signature = sign("altered-payload", digest)
    altered = payload.replace(b'"optional":null', b'"optional":{}')
    toolkit_registry.push_signature(f"{address}/cos/altered-payload", digest, altered, signature)
    # A second image that carries the first one's signature (valid, for another digest).
    second = toolkit_registry.push_layout(
        tiny_image(work / "second"), f"{address}/cos/borrowed-signature:2.0.0"
    )
    toolkit_registry.push_signature(
        f"{address}/cos/borrowed-signature", second, *sign("borrowed-signature", digest)
    )
    # Signed images whose content is then changed in the registry's storage.
    layered = tiny_image(work / "layer")
    layer_digest = push_signed(layered, f"{address}/cos/tampered-layer", "2.0.0").digest
    manifest = json.loads(toolkit_oci.blob_path(layered, layer_digest).read_bytes())
    flip_a_byte(stored_blob(storage, manifest["layers"][0]["digest"]))
    fronted = tiny_image(work / "manifest")
    manifest_digest = push_signed(fronted, f"{address}/cos/tampered-manifest", "2.0.0").digest
    stored = stored_blob(storage, manifest_digest)
    size = str(json.loads(stored.read_bytes())["layers"][0]["size"])
    wrong = size[:-1] + str((int(size[-1]) + 1) % 10)  # same length, still a valid manifest
    stored.write_bytes(
        stored.read_bytes().replace(f'"size":{size}'.encode(), f'"size":{wrong}'.encode())
    )

    return {
        "signed": at("signed", digest),
        "unsigned": at("unsigned", digest),
        "other-key": at("other-key", digest),
        "wrong-repository": at("wrong-repository", digest),
        "altered-payload": at("altered-payload", digest),
        "borrowed-signature": at("borrowed-signature", second),
        "tampered-layer": at("tampered-layer", layer_digest),
        "tampered-manifest": at("tampered-manifest", manifest_digest),
    }


def our_verdict(reference: str, keys_dir: Path) -> tuple[bool, str]:
    """What `cos upgrade` decides before it writes anything: the manifest fetched by digest
    and checked, a signature by a trusted key over that digest in that repository, and
    every layer pulled with its digest checked."""
    try:
        plan = upgrade.resolve(reference, "amd64")
        key = upgrade.check_signature(plan, keys_dir)
        for index, layer in enumerate(plan.layers):
            what = f"layer {index + 1}"
            for _ in registry.blob_chunks(plan.host, plan.repo, layer["digest"], what):
                pass
    except CosError as e:
        return False, str(e)
    return True, f"signature verified with {key.name}; {len(plan.layers)} layer(s) match"


@pytest.mark.parametrize("name", EXPECTED)
def test_skopeo_and_our_check_agree(name, cases, keys, skopeo_tree, tmp_path):
    reference, case = cases[name], EXPECTED[name]
    (_, project_public), _ = keys
    trusted = tmp_path / "keys"
    trusted.mkdir()
    shutil.copy(project_public, trusted / "cos-image.pub")
    theirs = verifier.skopeo_verify(reference, project_public, skopeo_tree)
    ours = our_verdict(reference, trusted)
    print(f"\n{name}: skopeo {theirs.accepted} ({theirs.message})\n{name}: ours {ours}")
    assert theirs.accepted == ours[0] == case.accepted, (theirs, ours)
    assert re.search(case.skopeo_says, theirs.message), theirs.message
    assert re.search(case.we_say, ours[1]), ours[1]


def test_a_tree_without_its_stamp_is_not_used(tmp_path):
    tree = tmp_path / "skopeo-trixie"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/skopeo").write_bytes(b"")
    assert not verifier.is_complete(tree)  # what a killed build would leave behind
    (tree / verifier.STAMP).write_text(json.dumps({"suite": verifier.SUITE, "version": "1"}))
    assert verifier.is_complete(tree)
    (tree / "usr/bin/skopeo").unlink()
    assert not verifier.is_complete(tree)
