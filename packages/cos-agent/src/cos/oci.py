"""The OCI image format as both sides need it: media types, content digests, and the
manifest for one architecture out of a multi-arch index. Shared by the machine's agent
and the host toolkit, so the format is written down once."""

import hashlib
import json

from cos.errors import CosError

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = (MEDIA_MANIFEST, MEDIA_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST)
INDEX_TYPES = (MEDIA_INDEX, MEDIA_DOCKER_LIST)
GZIP_LAYER_TYPES = (MEDIA_LAYER, MEDIA_DOCKER_LAYER)
# The kernel's name of an arch -> OCI's.
OCI_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def digest_of(data: bytes) -> str:
    """The content address of `data` as OCI and the registry API write it: sha256:<hex>."""
    return hash_digest(hashlib.sha256(data))


def hash_digest(sha256) -> str:
    """digest_of() for data fed piece by piece into a hashlib.sha256() object."""
    return "sha256:" + sha256.hexdigest()


def is_index(media_type: str, document: dict) -> bool:
    return (media_type or document.get("mediaType", "")) in INDEX_TYPES or (
        not media_type and "manifests" in document
    )


def manifest_for_arch(index: dict, oci_arch: str, where: str) -> dict:
    """The descriptor of the linux/`oci_arch` image in a multi-arch index."""
    offered = []
    for descriptor in index.get("manifests", []):
        platform = descriptor.get("platform", {})
        offered.append(f"{platform.get('os', '?')}/{platform.get('architecture', '?')}")
        if platform.get("os") == "linux" and platform.get("architecture") == oci_arch:
            return descriptor
    raise CosError(
        f"{where}: wrong arch: no linux/{oci_arch} image in the index "
        f"(it has {', '.join(offered) or 'none'})"
    )


def load_json(data: bytes, where: str) -> dict:
    try:
        document = json.loads(data)
    except ValueError as e:
        raise CosError(f"{where}: not JSON ({e})") from None
    if not isinstance(document, dict):
        raise CosError(f"{where}: not a JSON object")
    return document
