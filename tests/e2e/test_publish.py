"""The built OCI image in a real registry: pushed, read back by skopeo, signed over its
digest with the key whose public half the image itself carries."""

import json
import subprocess

import pytest

from toolkit import cosign
from toolkit import registry as reg
from toolkit.arch import get_arch
from toolkit.build import ImageBuild, image_folder
from toolkit.errors import CosError
from toolkit.flavors import load_flavor
from toolkit.publish import push_image, repository_for

pytestmark = pytest.mark.image


@pytest.fixture(scope="module")
def built(vm_settings, vm_arch) -> ImageBuild:
    flavor = load_flavor(vm_settings.flavor)
    image = ImageBuild(flavor, get_arch(vm_arch), image_folder(flavor.name, vm_arch))
    if not image.oci_layout.is_dir():
        pytest.fail(
            f"image not built: {image.oci_layout}; run `invoke build --flavor "
            f"{flavor.name} --arch {vm_arch}`"
        )
    return image


def skopeo_inspect(*args: str) -> dict:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_oci_layout_is_readable_with_labels(built):
    info = skopeo_inspect(f"oci:{built.oci_layout}")
    labels = info["Labels"]
    assert labels["io.cos.flavor"] == built.flavor.name
    assert labels["io.cos.arch"] == built.arch.name
    assert labels["org.opencontainers.image.version"] == built.flavor.version
    assert "org.opencontainers.image.created" in labels
    assert info["Architecture"] == built.arch.oci
    archive = skopeo_inspect(f"oci-archive:{built.oci_archive}")
    assert archive["Digest"] == info["Digest"]


def test_push_sign_and_verify(built, registry):
    published = push_image(built, registry, log=lambda _m: None)
    remote = skopeo_inspect(f"docker://{published.reference}")
    assert remote["Digest"] == published.digest
    assert remote["Labels"]["io.cos.flavor"] == built.flavor.name

    payload, signature = reg.fetch_signature(
        repository_for(registry, built.flavor.name), published.digest
    )
    baked_key = built.rootfs / "etc/cos/keys/cos-image.pub"
    cosign.verify(payload, signature, baked_key, published.digest)  # what a machine checks
    with pytest.raises(CosError, match="bad signature"):
        cosign.verify(payload.replace(b"cosign", b"cosigN"), signature, baked_key, published.digest)
    with pytest.raises(CosError, match="digest"):
        cosign.verify(payload, signature, baked_key, "sha256:" + "0" * 64)


def test_registry_down_is_a_clear_error(built):
    with pytest.raises(CosError, match="is not answering"):
        reg.push_layout(built.oci_layout, "127.0.0.1:9/cos/nothing:1")
