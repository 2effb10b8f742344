"""Where the built images of a flavor/arch are, and a clear error when they are not."""

from pathlib import Path

from toolkit import paths
from vm.errors import ImageNotBuilt

DISK_NAMES = ("disk.qcow2", "disk.raw")


def image_dir(flavor: str, arch: str) -> Path:
    return paths.build_dir() / "images" / flavor / arch


def _not_built(path: Path, flavor: str, arch: str) -> ImageNotBuilt:
    return ImageNotBuilt(
        f"image not built: {path}; run `invoke build --flavor {flavor} --arch {arch}`"
    )


def built_disk(flavor: str, arch: str) -> Path:
    """The preinstalled disk image; qcow2 is preferred (smaller backing file reads)."""
    folder = image_dir(flavor, arch)
    for name in DISK_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise _not_built(folder / DISK_NAMES[0], flavor, arch)


def installer_iso(flavor: str, arch: str) -> Path:
    path = image_dir(flavor, arch) / "installer.iso"
    if not path.is_file():
        raise _not_built(path, flavor, arch)
    return path
