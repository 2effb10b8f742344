"""`invoke push`: built OCI images -> a registry, each signed over its manifest digest.

The destination is the local registry or any Distribution registry, `HOST[/NAMESPACE]`;
the client authenticates with the credentials users already have (cos.auth).
"""

import re
from dataclasses import dataclass
from pathlib import Path

from cos.registry import parse_reference
from toolkit import cosign, registry
from toolkit.build import ImageBuild
from toolkit.errors import CosError

LOCAL_NAMESPACE = "cos"
# A repository path component, as the Distribution reference grammar has it.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


@dataclass
class Published:
    reference: str  # repository:tag
    digest: str


def repository_for(address: str, flavor: str) -> str:
    """<host>/cos/<flavor> for a bare registry host (the local registry's layout), and
    <host>/<namespace>/<flavor> when the address names a namespace."""
    return f"{address}/{flavor}" if "/" in address else f"{address}/{LOCAL_NAMESPACE}/{flavor}"


def destination(value: str) -> str:
    """Check `--registry HOST[/NAMESPACE]`; the address repositories go under."""
    if "://" in value:
        raise CosError(f"--registry {value!r}: give HOST[/NAMESPACE], without a scheme")
    address = value.strip().rstrip("/")
    host, _, namespace = address.partition("/")
    try:
        parse_reference(f"{address}/probe")  # the host rule every reference follows
    except CosError:
        raise CosError(
            f"--registry {value!r}: {host!r} is not a registry host (a name with a dot or a "
            "port, or localhost), e.g. ghcr.io/OWNER or 127.0.0.1:5000"
        ) from None
    for component in namespace.split("/") if namespace else []:
        if not _COMPONENT.fullmatch(component):
            raise CosError(
                f"--registry {value!r}: namespace component {component!r} is not a valid "
                "repository name (lowercase letters, digits, and . _ - between them)"
            )
    return address


def check_push_access(repository: str, log=print) -> None:
    """Fail now, before a long build, if the registry refuses a push to repository: start
    a blob upload (which needs the push right) and cancel it."""
    registry.probe_push(repository)
    log(f"push: {repository} accepts uploads")


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


def push_flavor_layout(
    layout: Path, flavor: str, tag: str, address: str, seen_as: str | None
) -> Published:
    """A layout as the flavor's repository under `address`, tagged `tag`, its signature
    naming that repository as machines reach it: under `seen_as` when that is given."""
    return push_signed(
        layout,
        repository_for(address, flavor),
        tag,
        identity=repository_for(seen_as or address, flavor),
    )


def push_image(
    image: ImageBuild, address: str, tag: str | None = None, seen_as: str | None = None, log=print
) -> Published:
    """One arch's image as <flavor>:<version>-<arch> (or `tag`); signed for the registry as
    machines reach it, `seen_as` when that is not `address`."""
    tag = tag or f"{image.flavor.version}-{image.arch.name}"
    published = push_flavor_layout(image.oci_layout, image.flavor.name, tag, address, seen_as)
    log(f"pushed {published.reference}@{published.digest[:19]}… and its signature")
    return published


def push_index(
    images: list[ImageBuild],
    index_layout: Path,
    address: str,
    seen_as: str | None = None,
    log=print,
) -> Published:
    """The multi-arch index `build` wrote (build_multiarch_index) as <flavor>:<version>."""
    flavor = images[0].flavor
    published = push_flavor_layout(index_layout, flavor.name, flavor.version, address, seen_as)
    log(
        f"pushed {published.reference}@{published.digest[:19]}… (index of {len(images)} arches) "
        "and its signature"
    )
    return published


def push_builds(
    images: list[ImageBuild],
    index_folder: Path,
    address: str,
    seen_as: str | None = None,
    log=print,
) -> list[Published]:
    """Every arch's image, then the multi-arch index over them (in `index_folder`, where
    the build wrote it) when there are several."""
    published = [push_image(image, address, seen_as=seen_as, log=log) for image in images]
    if len(images) > 1:
        index = index_folder / "oci"
        published.append(push_index(images, index, address, seen_as=seen_as, log=log))
    return published


def push_flavors(
    flavor: str | None,
    arch: str | None,
    address: str,
    *,
    test_images: bool = False,
    check_access: bool = False,
    log=print,
) -> list[Published]:
    """Build (cached) and push every arch of a flavor, or of every flavor ("all"), with the
    multi-arch index when there are several arches; `check_access` first proves the
    registry takes pushes to each repository, so bad credentials fail before any build."""
    from toolkit.build import build, image_folder
    from toolkit.flavors import flavor_names, load_flavor

    names = flavor_names() if flavor == "all" else [load_flavor(flavor).name]
    if check_access:
        for name in names:
            check_push_access(repository_for(address, name), log)
    published = []
    for name in names:
        images = build(name, arch, log=log)
        # `build` wrote the index beside the per-arch images.
        published += push_builds(images, image_folder(name, "multiarch"), address, log=log)
        if test_images:
            from toolkit.testimages import publish

            for image in images:
                publish(image, address, log=log)
    return published


def push_built_image(
    reference: str,
    arch: str | None,
    address: str,
    *,
    check_access: bool = False,
    seen_as: str | None = None,
    log=print,
) -> list[Published]:
    """`invoke push --image REF`: the outputs of `invoke build --image REF` (built now when
    not current), pushed and signed as a flavor's are, under the image's flavor name."""
    from toolkit import fromimage

    if check_access:  # before the build; the image's label names the repository
        labels = fromimage.source_labels(reference, fromimage.requested_arches(arch)[0])
        name = fromimage.flavor_name(labels, reference)
        check_push_access(repository_for(address, name), log)
    images = fromimage.build_from_image(reference, arch, log=log)
    index = fromimage.from_image_folder(reference, "multiarch")
    return push_builds(images, index, address, seen_as=seen_as, log=log)
