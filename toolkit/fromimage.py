"""`invoke build --image REF`: a bootable disk, installer ISO and OCI image from an existing
OCI image that holds the cOS packages (as bootc's image builder turns a bootc image into a
disk). REF is a registry reference (`HOST/REPO:TAG`, `docker://...`), `oci-archive:PATH`
or `oci:DIR`.

Stages, in build/images/from-image/<name>/<arch>:
- import: skopeo copies the image (this arch's, from an index) into an OCI layout, its
  blobs as they are;
- rootfs: its layers applied in order, checked to hold what a cOS system needs (the error
  names what is missing), finished as every image is (toolkit.derivative.finish_as_layer),
  keeping the image's own flavor name, version and persistent paths;
- then the outputs of every flavor: slot and recovery images, the OCI image (the imported
  layers as they are plus the finishing layer; `invoke push` signs what it pushes), disk
  and ISO.
"""

import dataclasses
import json
import re
from functools import partial
from pathlib import Path

from cos import osrelease
from toolkit import cosign, derivative, oci, paths
from toolkit.arch import Arch, host_arch, resolve_arches
from toolkit.build import (
    ImageBuild,
    build_multiarch_index,
    check_free_space,
    output_stages,
    stage_runner,
)
from toolkit.errors import CosError
from toolkit.flavors import DEFAULT_PERSISTENT_PATHS, Flavor
from toolkit.reproducible import source_date_epoch
from toolkit.runner import run, system_env

TRANSPORTS = ("docker://", "oci-archive:", "oci:")


def source_of(reference: str) -> str:
    """The skopeo source for REF: a transport given, or a registry reference."""
    if reference.startswith(TRANSPORTS):
        return reference
    if "://" in reference or reference.startswith("/"):
        raise CosError(
            f"--image {reference}: not an image reference; use HOST/REPO:TAG, "
            "oci-archive:PATH or oci:DIR"
        )
    return f"docker://{reference}"


def name_of(reference: str) -> str:
    """A folder name for the image: its repository's or file's last part."""
    text = reference
    for transport in TRANSPORTS:
        text = text.removeprefix(transport)
    parts = [p for p in text.split("@")[0].split("/") if p] or ["image"]
    if parts[-1] in ("image.oci.tar", "oci") and len(parts) >= 3:
        last = f"{parts[-3]}-{parts[-2]}"  # build/images/<flavor>/<arch>/image.oci.tar
    else:
        last = parts[-1].split(":")[0]  # without a tag
    return re.sub(r"[^a-z0-9.-]+", "-", last.lower()).strip("-.") or "image"


def on_loopback(source: str) -> bool:
    """A registry on this host (the local one speaks plain HTTP): skopeo skips TLS."""
    return re.match(r"docker://(127\.0\.0\.1|localhost)[:/]", source) is not None


def import_image(reference: str, arch: Arch, layout: Path, log=print) -> None:
    """`reference` (this arch's image) copied into the OCI layout `layout`."""
    source = source_of(reference)
    run(
        [
            "skopeo", "copy", "--quiet", "--override-arch", arch.oci, "--override-os", "linux",
            *(["--src-tls-verify=false"] if on_loopback(source) else []),
            source, f"oci:{layout}:image",
        ],
        what=f"skopeo copy of {reference} ({arch.name})",
        log=log,
        env=system_env(),
    )  # fmt: skip


def local_source(reference: str) -> Path | None:
    """The archive file or layout folder an oci-archive:/oci: reference names, checked to
    be there (None for a registry image)."""
    source = source_of(reference)
    if not source.startswith(("oci-archive:", "oci:")):
        return None
    path = Path(source.partition(":")[2].split(":")[0])
    archive = source.startswith("oci-archive:")
    if not (path.is_file() if archive else path.is_dir()):
        wanted = "an OCI archive file" if archive else "an OCI layout folder"
        raise CosError(f"--image {reference}: {path} is not {wanted}")
    return path


def source_key(reference: str) -> object:
    """What the import stage's key holds of the source: an archive or layout by content, a
    registry image by its manifest as the registry serves it now. A source that is not
    there fails here, before any build folder is made."""
    path = local_source(reference)
    return path if path is not None else inspect(reference, "--raw")


def source_labels(reference: str, arch: Arch) -> dict[str, str]:
    """The labels of the image's `arch` variant, read at its source before any import
    (skopeo still unpacks an oci-archive: to a temporary folder to read it)."""
    local_source(reference)  # a missing file or folder named as such, not by skopeo
    config = inspect(reference, "--config", "--override-arch", arch.oci, "--override-os", "linux")
    return json.loads(config).get("config", {}).get("Labels") or {}


def inspect(reference: str, *options: str) -> str:
    """What `skopeo inspect OPTIONS` prints of the image at its source."""
    source = source_of(reference)
    return run(
        ["skopeo", "inspect", *options,
         *(["--tls-verify=false"] if on_loopback(source) else []), source],
        what=f"skopeo inspect of {reference}",
        env=system_env(),
    )  # fmt: skip


def flavor_name(labels: dict[str, str], reference: str) -> str:
    """The name the image goes by: its cOS label, or its reference's last part."""
    return labels.get("io.cos.flavor") or name_of(reference)


def named_flavor(name: str, arch: Arch, description: str = "", version: str = "0") -> Flavor:
    """A Flavor for an image that has no flavor.yaml: what names its outputs."""
    return Flavor(
        name=name,
        description=description,
        suite="",
        architectures=[arch.name],
        kernel={},
        packages=[],
        overlays=[],
        cloud_configs=[],
        version=version,
        persistent_paths=DEFAULT_PERSISTENT_PATHS,
        components=[],
    )


def image_flavor(reference: str, layout: Path, arch: Arch) -> Flavor:
    """What the image says of itself (its cOS labels), as a Flavor for naming its outputs."""
    manifest = oci.read_blob_json(layout, oci.top_descriptor(layout)["digest"])
    config = oci.read_blob_json(layout, manifest["config"]["digest"])
    if config.get("architecture") != arch.oci:
        raise CosError(
            f"--image {reference}: its image is for {config.get('architecture')!r}, not "
            f"{arch.oci} ({arch.name})"
        )
    labels = config.get("config", {}).get("Labels") or {}
    return named_flavor(
        flavor_name(labels, reference),
        arch,
        labels.get("org.opencontainers.image.description", f"cOS from {reference}"),
        labels.get("org.opencontainers.image.version", "0"),
    )


def imported_layers(layout: Path) -> list[oci.NewLayer]:
    manifest = oci.read_blob_json(layout, oci.top_descriptor(layout)["digest"])
    config = oci.read_blob_json(layout, manifest["config"]["digest"])
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    layers = []
    for index, layer in enumerate(manifest["layers"]):
        if layer["mediaType"] not in (
            oci.MEDIA_LAYER,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ):
            raise CosError(f"{layout}: layer {layer['digest']} is {layer['mediaType']}, not gzip")
        created_by = history[index].get("created_by", "") if index < len(history) else ""
        layers.append(
            oci.NewLayer(
                oci.blob_path(layout, layer["digest"]),
                config["rootfs"]["diff_ids"][index],
                created_by,
            )
        )
    return layers


def make_imported_rootfs(
    reference: str,
    flavor: Flavor,
    arch: Arch,
    layout: Path,
    image_key: Path,
    epoch: int,
    target: Path,
    finish_tar: Path,
    log=print,
) -> None:
    """The image's layers applied into `target`, checked and finished; what finishing
    changed as the layer tar `finish_tar`."""
    target.mkdir()
    derivative.apply_layers(target, imported_layers(layout), f"--image {reference}")
    release = osrelease.read(target) if (target / "usr/lib/os-release").is_file() else {}
    persistent = target / "etc/cos/persistent-paths"
    flavor = dataclasses.replace(
        flavor,
        version=release.get("IMAGE_VERSION") or flavor.version,
        persistent_paths=persistent.read_text().split() if persistent.is_file() else [],
    )
    build_id = release.get("BUILD_ID", "imported")
    derivative.finish_as_layer(
        target, f"--image {reference}", flavor, arch, image_key, build_id, epoch, finish_tar, log
    )


def write_imported_oci(
    imported: Path,
    finish_tar: Path,
    layout: Path,
    archive: Path,
    *,
    labels: dict,
    epoch: int,
    log=print,
) -> None:
    """The imported image, its layers as they are, plus the finishing layer."""
    derivative.write_derived_oci(
        imported, [], None, finish_tar, layout, archive, labels=labels, epoch=epoch, log=log
    )


def from_image_folder(reference: str, arch: str) -> Path:
    """build/images/from-image/<name>/<arch>, or <name>/multiarch for the index."""
    return paths.build_dir() / "images" / "from-image" / name_of(reference) / arch


def requested_arches(arch_name: str | None) -> list[Arch]:
    """The arches an `--image` build makes: those asked for, or the host's."""
    return resolve_arches(arch_name or host_arch(), ["x86_64", "aarch64"])


def build_from_image(reference: str, arch_name: str | None, log=print) -> list[ImageBuild]:
    """A disk, ISO and OCI image per requested arch (default: the host's) of `reference`,
    and the multi-arch index over them when there are several."""
    arches = requested_arches(arch_name)
    source = source_key(reference)  # first: a source that is not there leaves nothing
    _private, image_key = cosign.ensure_keypair()
    epoch = source_date_epoch()
    images = []
    for arch in arches:
        log(f"== --image {reference} {arch.name}")
        folder = from_image_folder(reference, arch.name)
        check_free_space(folder)
        image = ImageBuild(named_flavor(name_of(reference), arch), arch, folder)
        stage = stage_runner(image, log)
        layout = folder / "imported"
        imported = stage(
            "import",
            {"reference": reference, "arch": arch.name, "source": source},
            [layout],
            partial(import_image, reference, arch, layout, log=log),
        )
        image.flavor = image_flavor(reference, layout, arch)
        rootfs = stage(
            "rootfs",
            {"import": imported.key, "image_key": image_key, "epoch": epoch},
            [image.rootfs, image.finish_layer],
            partial(
                make_imported_rootfs, reference, image.flavor, arch, layout, image_key, epoch,
                image.rootfs, image.finish_layer, log=log,
            ),
        )  # fmt: skip
        write_oci = partial(
            write_imported_oci, layout, image.finish_layer, image.oci_layout, image.oci_archive,
            epoch=epoch, log=log,
        )  # fmt: skip
        images.append(output_stages(image, stage, rootfs, write_oci, epoch))
    if len(images) > 1:
        index = build_multiarch_index(images, from_image_folder(reference, "multiarch"))
        log(f"multi-arch index: {index}")
    return images
