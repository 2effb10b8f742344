"""`invoke build`: flavor + arch -> rootfs -> slot image, recovery, disk, OCI image.

Each stage is cached by a hash of its inputs (toolkit.cache), and each stage's key feeds
the next, so a changed package rebuilds the rootfs and what follows, nothing else.
"""

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from toolkit import cosign, oci, paths
from toolkit.arch import Arch
from toolkit.cache import StageCache, StageResult
from toolkit.disk import build_disk, make_slot_image
from toolkit.errors import CosError
from toolkit.flavors import Flavor
from toolkit.initramfs import build_initramfs
from toolkit.iso import build_iso
from toolkit.rootfs import build_rootfs, finish, kernel_version, mirror
from toolkit.runner import run

# Bump when the build logic changes in a way the inputs do not show.
BUILDER_VERSION = 2
MIN_FREE_BYTES = 6 << 30


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


def image_folder(flavor: str, arch: str) -> Path:
    return paths.build_dir() / "images" / flavor / arch


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        return int(value)
    result = subprocess.run(
        ["git", "-C", str(paths.REPO_ROOT), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(result.stdout.strip() or time.time())


def check_free_space(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise CosError(
            f"{folder}: only {free >> 20} MiB free; a build needs {MIN_FREE_BYTES >> 20} MiB"
        )


def _make_rootfs(image: ImageBuild, repo, image_key: Path, log, out: dict[Path, Path]) -> None:
    target = out[image.rootfs]
    build_rootfs(image.flavor, image.arch, repo.repo_dir, repo.keyring, target, log=log)
    finish(target, image.flavor, image.arch, build_id=repo.inputs_hash[:12])
    keys = target / "etc/cos/keys"
    keys.mkdir(parents=True, exist_ok=True)
    shutil.copy(image_key, keys / "cos-image.pub")
    version = kernel_version(target)
    (target / "boot/initrd.img").write_bytes(build_initramfs(target, version))
    vmlinuz = target / "boot/vmlinuz"
    vmlinuz.unlink(missing_ok=True)
    vmlinuz.symlink_to(f"vmlinuz-{version}")


def _make_recovery(image: ImageBuild, epoch: int, out: dict[Path, Path]) -> None:
    # gzip, which every GRUB's squash4 reads; level 1 builds 8x faster than 9 for 7% more bytes.
    run(
        [
            "mksquashfs",
            str(image.rootfs),
            str(out[image.recovery_image]),
            "-comp",
            "gzip",
            "-Xcompression-level",
            "1",
            "-noappend",
            "-no-progress",
            "-quiet",
            "-mkfs-time",
            str(epoch),
            "-all-time",
            str(epoch),
        ],
        what="mksquashfs recovery image",
    )


def _make_disk(image: ImageBuild, epoch: int, out: dict[Path, Path]) -> None:
    build_disk(
        image.rootfs, image.slot_image, image.recovery_image, image.arch, out[image.disk_raw], epoch
    )
    run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-c",
            "-o",
            "compression_type=zstd",
            "-m",
            "2",
            "-W",
            str(out[image.disk_raw]),
            str(out[image.disk_qcow2]),
        ],
        what="qemu-img convert to qcow2",
    )


def _make_oci(image: ImageBuild, epoch: int, log, out: dict[Path, Path]) -> None:
    staging = image.folder / ".oci-staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        built = oci.build_oci_image(
            image.rootfs,
            staging,
            arch_oci=image.arch.oci,
            labels=oci_labels(image),
            created=iso_time(epoch),
            log=log,
        )
        built.layout_dir.rename(out[image.oci_layout])
        built.archive.rename(out[image.oci_archive])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_image(flavor: Flavor, arch: Arch, repo, log=print, force: bool = False) -> ImageBuild:
    """Every stage of one flavor and arch; each stage's key is an input of the next."""
    image = ImageBuild(flavor, arch, image_folder(flavor.name, arch.name))
    check_free_space(image.folder)
    cache = StageCache(image.folder)
    epoch = source_date_epoch()
    code = paths.REPO_ROOT / "toolkit"

    def stage(name: str, inputs: dict, outputs: list[Path], build) -> StageResult:
        log(f"[{name}] ...")
        result = cache.run(name, inputs, outputs, build, force=force)
        took = f" in {result.seconds:.1f} s" if result.status == "built" else ""
        log(f"[{name}] {result.status}{took}")
        image.stages.append(result)
        return result

    _private, image_key = cosign.ensure_keypair()
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
            "code": [code / "rootfs.py", code / "initramfs.py", code / "native.py"],
        },
        [image.rootfs],
        partial(_make_rootfs, image, repo, image_key, log),
    )
    system = stage(
        "system-image",
        {"rootfs": rootfs.key, "code": code / "disk.py"},
        [image.slot_image],
        lambda out: make_slot_image(image.rootfs, out[image.slot_image], epoch),
    )
    recovery = stage(
        "recovery-image",
        {"rootfs": rootfs.key, "code": code / "build.py"},
        [image.recovery_image],
        partial(_make_recovery, image, epoch),
    )
    stage(
        "disk",
        {
            "system": system.key,
            "recovery": recovery.key,
            "code": [code / "disk.py", code / "grub.py", code / "build.py"],
        },
        [image.disk_raw, image.disk_qcow2],
        partial(_make_disk, image, epoch),
    )
    stage(
        "installer-iso",
        {"recovery": recovery.key, "code": [code / "iso.py", code / "grub.py"]},
        [image.installer_iso],
        lambda out: build_iso(
            image.rootfs, image.recovery_image, arch, out[image.installer_iso], epoch
        ),
    )
    stage(
        "oci",
        {"rootfs": rootfs.key, "code": [code / "oci.py", code / "build.py"]},
        [image.oci_layout, image.oci_archive],
        partial(_make_oci, image, epoch, log),
    )
    return image


def iso_time(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


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
    from toolkit.flavors import load_flavor
    from toolkit.packages import build_repository

    flavor = load_flavor(flavor_name)
    arches = resolve_arches(arch_name, flavor.architectures)
    repo = build_repository(log=log)
    images = []
    for arch in arches:
        log(f"== {flavor.name} {arch.name}")
        images.append(build_image(flavor, arch, repo, log))
    if len(images) > 1:
        index = build_multiarch_index(images)
        log(f"multi-arch index: {index}")
    return images


def build_multiarch_index(images: list[ImageBuild]) -> Path:
    """The OCI index over the per-arch images of one flavor; returns its layout folder."""
    return oci.build_index(
        {i.arch.oci: oci.read_oci_image(i.folder) for i in images},
        image_folder(images[0].flavor.name, "multiarch"),
    )


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
