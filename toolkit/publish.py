"""`invoke push`: built OCI images -> the registry, each signed over its manifest digest."""

from dataclasses import dataclass
from pathlib import Path

from toolkit import cosign, registry
from toolkit.build import ImageBuild


@dataclass
class Published:
    reference: str  # repository:tag
    digest: str


def repository_for(address: str, flavor: str) -> str:
    return f"{address}/cos/{flavor}"


def push_signed(layout: Path, repository: str, tag: str, identity: str | None = None) -> Published:
    """Push a layout as repository:tag, then its cosign signature beside it. The signature
    names `identity` (default: `repository`): the repository as the machines that verify
    it name it, when they reach the registry by another address (a mirror, a forward)."""
    reference = f"{repository}:{tag}"
    digest = registry.push_layout(layout, reference)
    private, _public = cosign.ensure_keypair()
    payload, signature = cosign.sign_digest(identity or repository, digest, private)
    registry.push_signature(repository, digest, payload, signature)
    return Published(reference, digest)


def push_image(image: ImageBuild, address: str, tag: str | None = None, log=print) -> Published:
    """One arch's image as <flavor>:<version>-<arch> (or `tag`)."""
    published = push_signed(
        image.oci_layout,
        repository_for(address, image.flavor.name),
        tag or f"{image.flavor.version}-{image.arch.name}",
    )
    log(f"pushed {published.reference}@{published.digest[:19]}… and its signature")
    return published


def push_index(images: list[ImageBuild], index_layout: Path, address: str, log=print) -> Published:
    """The multi-arch index `build` wrote (build_multiarch_index) as <flavor>:<version>."""
    flavor = images[0].flavor
    published = push_signed(index_layout, repository_for(address, flavor.name), flavor.version)
    log(
        f"pushed {published.reference}@{published.digest[:19]}… (index of {len(images)} arches) "
        "and its signature"
    )
    return published
