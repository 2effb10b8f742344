"""`invoke push`: built OCI images -> the registry, each signed over its manifest digest."""

from dataclasses import dataclass

from toolkit import cosign, oci, registry
from toolkit.build import ImageBuild


@dataclass
class Published:
    reference: str  # repository:tag
    digest: str


def repository_for(address: str, flavor: str) -> str:
    return f"{address}/cos/{flavor}"


def push_image(image: ImageBuild, address: str, tag: str | None = None, log=print) -> Published:
    """Push one arch's image as <flavor>:<version>-<arch> (or `tag`) and sign its digest."""
    repo = repository_for(address, image.flavor.name)
    reference = f"{repo}:{tag or f'{image.flavor.version}-{image.arch.name}'}"
    digest = registry.push_layout(image.oci_layout, reference)
    private, _public = cosign.ensure_keypair()
    payload, signature = cosign.sign_digest(reference, digest, private)
    registry.push_signature(repo, digest, payload, signature)
    log(f"pushed {reference}@{digest[:19]}… and its signature")
    return Published(reference, digest)


def push_index(images: list[ImageBuild], address: str, log=print) -> Published:
    """The multi-arch index as <flavor>:<version>, signed like a single image."""
    flavor = images[0].flavor
    layout = oci.build_index({i.arch.oci: oci.read_oci_image(i.folder) for i in images},
                             images[0].folder.parent / "multiarch")
    reference = f"{repository_for(address, flavor.name)}:{flavor.version}"
    digest = registry.push_layout(layout, reference)
    private, _public = cosign.ensure_keypair()
    payload, signature = cosign.sign_digest(reference, digest, private)
    registry.push_signature(repository_for(address, flavor.name), digest, payload, signature)
    log(f"pushed {reference}@{digest[:19]}… (index of {len(images)} arches) and its signature")
    return Published(reference, digest)
