"""`invoke build`: flavor + arch -> rootfs -> slot image, recovery, disk, OCI image.

Each stage is cached by a hash of its inputs (toolkit.cache), and each stage's key feeds
the next, so a changed package rebuilds the rootfs and what follows, nothing else. A
stage's code is an input too, found from the imports of the module that holds its
function (toolkit.cache.code_files), never listed by hand.
"""

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from toolkit import buildah, cosign, derivative, oci, paths
from toolkit.arch import Arch
from toolkit.cache import StageCache, StageResult, call_with_outputs, code_files
from toolkit.disk import make_disk_images, make_slot_image
from toolkit.errors import CosError
from toolkit.flavors import Flavor, load_flavor
from toolkit.iso import build_iso
from toolkit.recovery import make_recovery_image
from toolkit.reproducible import source_date_epoch
from toolkit.rootfs import make_rootfs, mirror

# Bump when the build logic changes in a way the inputs do not show.
BUILDER_VERSION = 2
MIN_FREE_BYTES = 6 << 30
# What an image is made from: a commit that touches none of these keeps its timestamp.
IMAGE_SOURCES = (paths.REPO_ROOT / "toolkit", paths.PACKAGES_DIR, paths.IMAGES_DIR)


@dataclass
class ImageBuild:
    """One flavor and arch in the build folder, and what each stage did this time."""

    flavor: Flavor
    arch: Arch
    folder: Path
    stages: list[StageResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rootfs = self.folder / "rootfs"
        self.slot_image = self.folder / "system.img"  # becomes active.img and passive.img
        self.recovery_image = self.folder / "recovery.img"
        self.disk_raw = self.folder / "disk.raw"
        self.disk_qcow2 = self.folder / "disk.qcow2"
        self.installer_iso = self.folder / "installer.iso"
        self.oci_layout = self.folder / "oci"
        self.oci_archive = self.folder / "image.oci.tar"
        # a Containerfile flavor's: the layers buildah added, what finishing changed
        self.added_layers = self.folder / "added-layers"
        self.finish_layer = self.folder / "finish-layer.tar"


def image_folder(flavor: str, arch: str) -> Path:
    return paths.build_dir() / "images" / flavor / arch


def check_free_space(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise CosError(
            f"{folder}: only {free >> 20} MiB free; a build needs {MIN_FREE_BYTES >> 20} MiB"
        )


def build_image(flavor: Flavor, arch: Arch, repo, log=print, force: bool = False) -> ImageBuild:
    """Every stage of one flavor and arch; each stage's key is an input of the next."""
    image = ImageBuild(flavor, arch, image_folder(flavor.name, arch.name))
    check_free_space(image.folder)
    stage = stage_runner(image, log, force)
    epoch = source_date_epoch(*IMAGE_SOURCES)
    _private, image_key = cosign.ensure_keypair()
    if flavor.containerfile is None:
        rootfs = stage(
            "rootfs",
            {
                "builder": BUILDER_VERSION,
                "arch": arch.name,
                "suite": flavor.suite,
                "packages": flavor.packages_for(arch.name),
                "mirror": mirror(),
                "flavor_files": flavor.files,
                "overlays": flavor.overlays,
                "cloud_configs": flavor.cloud_configs,
                "persistent": flavor.persistent_paths,
                "version": flavor.version,
                "repo": repo.inputs_hash,
                "image_key": image_key,
            },
            [image.rootfs],
            partial(
                make_rootfs,
                flavor,
                arch,
                repo.repo_dir,
                repo.keyring,
                repo.inputs_hash[:12],
                image_key,
                image.rootfs,
                log=log,
            ),
        )
        write_oci = partial(
            oci.write_image,
            image.rootfs,
            image.oci_layout,
            image.oci_archive,
            arch_oci=arch.oci,
            epoch=epoch,
            project_packages=set(repo.built + repo.reused),
            log=log,
        )
    else:
        # the parent is the flavor of that name beside this one (in the same images folder)
        parent = build_image(load_flavor(flavor.parent, flavor.folder.parent), arch, repo, log)
        rootfs, write_oci = derived_stages(image, parent, stage, image_key, epoch, log)
    return output_stages(image, stage, rootfs, write_oci, epoch)


Stage = Callable[[str, dict, list[Path], partial], StageResult]


def stage_runner(image: ImageBuild, log=print, force: bool = False) -> Stage:
    """stage(name, inputs, outputs, function) for the stages of `image`'s folder."""
    cache = StageCache(image.folder)

    def stage(name: str, inputs: dict, outputs: list[Path], function: partial) -> StageResult:
        """Run `function` (a toolkit function with its arguments; those naming an output
        get its temporary) unless the stage is current. Its code, the function's module
        and every toolkit module that one imports, is part of the key."""
        log(f"[{name}] ...")
        inputs = {**inputs, "code": code_files(function.func.__module__)}
        build = partial(call_with_outputs, function)
        result = cache.run(name, inputs, outputs, build, force=force)
        took = f" in {result.seconds:.1f} s" if result.status == "built" else ""
        log(f"[{name}] {result.status}{took}")
        image.stages.append(result)
        return result

    return stage


def output_stages(
    image: ImageBuild, stage: Stage, rootfs: StageResult, write_oci: partial, epoch: int
) -> ImageBuild:
    """What every image is made into from its finished rootfs (the `rootfs` stage): slot
    and recovery images, the OCI image (`write_oci` without its labels), disk and ISO."""
    arch = image.arch
    system = stage(
        "system-image",
        {"rootfs": rootfs.key, "epoch": epoch},
        [image.slot_image],
        partial(make_slot_image, image.rootfs, image.slot_image, epoch),
    )
    recovery = stage(
        "recovery-image",
        {"rootfs": rootfs.key, "epoch": epoch},
        [image.recovery_image],
        partial(make_recovery_image, image.rootfs, image.recovery_image, epoch),
    )
    labels = oci_labels(image)
    if image.slot_image.exists():  # what a machine needs on COS_STATE to hold it as a slot
        labels["io.cos.slot-size"] = str(image.slot_image.stat().st_size)
    oci_stage = stage(
        "oci",
        {"rootfs": rootfs.key, "labels": labels, "epoch": epoch},
        [image.oci_layout, image.oci_archive],
        partial(write_oci.func, *write_oci.args, **write_oci.keywords, labels=labels),
    )
    stage(
        "disk",
        {"system": system.key, "recovery": recovery.key, "oci": oci_stage.key, "epoch": epoch},
        [image.disk_raw, image.disk_qcow2],
        partial(
            make_disk_images,
            image.rootfs,
            image.slot_image,
            image.recovery_image,
            image.oci_layout,
            arch,
            image.disk_raw,
            image.disk_qcow2,
            epoch,
        ),
    )
    stage(
        "installer-iso",
        {"recovery": recovery.key, "system": system.key, "oci": oci_stage.key, "epoch": epoch},
        [image.installer_iso],
        partial(
            build_iso,
            image.rootfs,
            image.recovery_image,
            arch,
            image.installer_iso,
            epoch,
            image.slot_image,
            image.oci_layout,
        ),
    )
    return image


def derived_stages(
    image: ImageBuild, parent: ImageBuild, stage, image_key: Path, epoch: int, log=print
) -> tuple[StageResult, partial]:
    """A Containerfile flavor's own stages (toolkit.derivative) on top of its parent's
    build: the rootfs stage's result, and the writer of its OCI image (the parent's
    layers shared, the added and finishing layers on top)."""
    flavor, arch = image.flavor, image.arch
    parent_oci = next(s for s in parent.stages if s.name == "oci")
    parent_rootfs = next(s for s in parent.stages if s.name == "rootfs")
    added = stage(
        "containerfile",
        {
            "parent": parent_oci.key,
            "context": flavor.folder,  # the Containerfile and what it copies
            "arch": arch.name,
            "version": flavor.version,
            "epoch": epoch,
        },
        [image.added_layers],
        partial(
            buildah.build_containerfile,
            flavor,
            arch,
            parent.flavor.version,
            parent.oci_archive,
            parent.oci_layout,
            image.added_layers,
            epoch,
            log=log,
        ),
    )
    rootfs = stage(
        "rootfs",
        {
            "builder": BUILDER_VERSION,
            "parent": parent_rootfs.key,
            "added": added.key,
            "flavor_files": flavor.files,
            "persistent": flavor.persistent_paths,
            "image_key": image_key,
        },
        [image.rootfs, image.finish_layer],
        partial(
            derivative.make_derived_rootfs,
            flavor,
            arch,
            parent.rootfs,
            image.added_layers,
            image_key,
            added.key[:12],
            epoch,
            image.rootfs,
            image.finish_layer,
            log=log,
        ),
    )
    layers, container_config = buildah.added_layers(image.added_layers)
    write_oci = partial(
        derivative.write_derived_oci,
        parent.oci_layout,
        layers,
        container_config,
        image.finish_layer,
        image.oci_layout,
        image.oci_archive,
        epoch=epoch,
        log=log,
    )
    return rootfs, write_oci


def oci_labels(image: ImageBuild) -> dict[str, str]:
    flavor = image.flavor
    labels = {
        "org.opencontainers.image.title": f"cos-{flavor.name}",
        "org.opencontainers.image.description": flavor.description,
        "org.opencontainers.image.version": flavor.version,
        "io.cos.flavor": flavor.name,
        "io.cos.arch": image.arch.name,
    }
    source = subprocess.run(
        ["git", "-C", str(paths.REPO_ROOT), "config", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if source:
        labels["org.opencontainers.image.source"] = source
    return labels


def build(flavor_name: str | None, arch_name: str | None, log=print) -> list[ImageBuild]:
    """Packages, then every requested arch of the flavor; a multi-arch index when both."""
    from toolkit.arch import resolve_arches
    from toolkit.packages import build_repository

    flavor = load_flavor(flavor_name)
    arches = resolve_arches(arch_name, flavor.architectures)
    repo = build_repository(log=log)
    images = []
    for arch in arches:
        log(f"== {flavor.name} {arch.name}")
        images.append(build_image(flavor, arch, repo, log))
    if len(images) > 1:
        index = build_multiarch_index(images, image_folder(flavor.name, "multiarch"))
        log(f"multi-arch index: {index}")
    return images


def build_multiarch_index(images: list[ImageBuild], folder: Path) -> Path:
    """The OCI index over the per-arch images of one flavor, in `folder`; returns its layout
    folder."""
    return oci.build_index({i.arch.oci: oci.read_oci_image(i.folder) for i in images}, folder)


def summary(images: list[ImageBuild]) -> str:
    lines = []
    for image in images:
        lines.append(f"{image.flavor.name} {image.arch.name}:")
        for stage in image.stages:
            took = f"{stage.seconds:6.1f} s" if stage.status == "built" else "  cached"
            lines.append(f"  {stage.name:15} {took}")
        size = image.disk_qcow2.stat().st_size >> 20
        lines.append(f"  disk: {image.disk_qcow2} ({size} MiB qcow2)")
    return "\n".join(lines)
