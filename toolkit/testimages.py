"""The images the upgrade scenarios pull, made from a built image by adding one layer (as
a Containerfile `FROM` it would), and pushed beside it:

    v2          the next version: os-release says so, and a file of the project changed
    unsigned    v2 without a signature
    other-key   v2 signed with a key the machines do not trust
    panic       v2 whose initramfs is garbage: the kernel panics before the root is mounted
    unhealthy   v2 with a health check that always fails
    hang        v2 whose boot never reaches its assessment (a unit it waits for never ends),
                with a boot deadline of 60 s instead of 300
"""

import re
from dataclasses import dataclass

from toolkit import cosign, oci, registry
from toolkit.build import ImageBuild
from toolkit.publish import push_signed, repository_for
from toolkit.reproducible import source_date_epoch

VARIANTS = ("v2", "unsigned", "other-key", "panic", "unhealthy", "hang")


@dataclass
class TestImage:
    variant: str
    reference: str  # repository:tag
    version: str


def next_version(version: str) -> str:
    return f"{version}+v2"


def layer_files(image: ImageBuild, variant: str) -> dict[str, tuple[bytes, int] | None]:
    version = next_version(image.flavor.version)
    release = (image.rootfs / "usr/lib/os-release").read_text()
    release = re.sub(r"(?m)^IMAGE_VERSION=.*$", f'IMAGE_VERSION="{version}"', release)
    files: dict[str, tuple[bytes, int] | None] = {
        "usr/lib/os-release": (release.encode(), 0o644),
        "usr/share/cos/test-variant": (f"{variant}\n".encode(), 0o644),
    }
    if variant == "panic":
        files["boot/initrd.img"] = (b"not an initramfs\n" * 64, 0o644)
    if variant == "unhealthy":
        check = b"#!/bin/sh\necho 'this system is unhealthy by design' >&2\nexit 1\n"
        files["usr/lib/cos/health.d/90-unhealthy"] = (check, 0o755)
    if variant == "hang":
        unit = b"[Service]\nType=oneshot\nExecStart=/bin/sleep infinity\n"
        files["etc/systemd/system/cos-hang.service"] = (unit, 0o644)
        waits = b"[Unit]\nWants=cos-hang.service\nAfter=cos-hang.service\n"
        files["etc/systemd/system/cos-boot-assessment.service.d/hang.conf"] = (waits, 0o644)
        files["etc/cos/boot-deadline"] = (b"60\n", 0o644)
    return files


def publish(
    image: ImageBuild, address: str, seen_as: str | None = None, log=print
) -> dict[str, TestImage]:
    """Every variant of `image` in the registry at `address` (tag <version>-<arch>-<variant>),
    each with its own content (and digest). Signatures name the registry as the machines
    reach it, `seen_as` (e.g. 10.0.2.100:5000 through QEMU's guest forward)."""
    repository = repository_for(address, image.flavor.name)
    identity = repository_for(seen_as or address, image.flavor.name)
    version = next_version(image.flavor.version)
    published = {}
    for variant in VARIANTS:
        layout = oci.derive_image(
            image.oci_layout,
            image.folder / "test-images" / variant,
            layer_files(image, variant),
            labels={"org.opencontainers.image.version": version},
            epoch=source_date_epoch(),
        )
        tag = f"{image.flavor.version}-{image.arch.name}-{variant}"
        reference = f"{repository}:{tag}"
        if variant == "unsigned":
            registry.push_layout(layout, reference)
        elif variant == "other-key":
            digest = registry.push_layout(layout, reference)
            untrusted, _ = cosign.ensure_keypair(image.folder / "test-images" / "untrusted-key")
            payload, signature = cosign.sign_digest(identity, digest, untrusted)
            registry.push_signature(repository, digest, payload, signature)
        else:
            push_signed(layout, repository, tag, identity=identity)
        published[variant] = TestImage(variant, reference, version)
        log(f"test image {variant}: {reference}")
    return published
