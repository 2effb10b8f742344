"""GRUB's EFI binary for a cOS disk, made by grub-mkimage with every module built in and
an early config that finds the menu. Once for the host's disk and ISO builder (modules
from the image's rootfs) and the machine's installer (modules of the running system).
"""

from dataclasses import dataclass
from pathlib import Path

from cos.errors import CosError

GRUB_SHARE = Path("usr/share/cos/grub")  # cos-grub's files, relative to a root


@dataclass(frozen=True)
class EfiArch:
    platform: str  # grub-mkimage --format, and the module folder under /usr/lib/grub
    boot_file: str  # the removable-media path's file name, EFI/BOOT/<this>
    package: str  # the Debian package holding the modules


EFI_ARCHES = {
    "x86_64": EfiArch("x86_64-efi", "BOOTX64.EFI", "grub-efi-amd64-bin"),
    "aarch64": EfiArch("arm64-efi", "BOOTAA64.EFI", "grub-efi-arm64-bin"),
}


def efi_arch(machine: str) -> EfiArch:
    try:
        return EFI_ARCHES[machine]
    except KeyError:
        raise CosError(
            f"no UEFI GRUB for arch {machine!r} (cOS has {', '.join(EFI_ARCHES)})"
        ) from None


def grub_modules(root: Path) -> list[str]:
    text = (root / GRUB_SHARE / "modules").read_text()
    return [m for line in text.splitlines() for m in line.split("#", 1)[0].split()]


def embedded_config(text: str) -> str:
    """The early config without comment lines: GRUB runs an embedded config before its
    normal parser is up, and the one it has prints "Unknown command `#'" for each."""
    return "".join(
        line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#")
    )


def module_dir(root: Path, platform: str, package: str) -> Path:
    folder = root / "usr/lib/grub" / platform
    if not folder.is_dir():
        raise CosError(
            f"{root}: no GRUB modules in /{folder.relative_to(root)}; is {package} installed?"
        )
    return folder


def mkimage_command(
    root: Path, platform: str, package: str, output: Path, config: Path
) -> list[str]:
    """grub-mkimage's arguments for the binary of `root`'s GRUB; `config` is the embedded
    early config (already stripped of comments)."""
    return [
        "grub-mkimage",
        "--directory",
        str(module_dir(root, platform, package)),
        "--format",
        platform,
        "--output",
        str(output),
        "--config",
        str(config),
        "--prefix",
        "/EFI/cos",
        *grub_modules(root),
    ]
