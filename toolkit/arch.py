"""The two architectures and every name each tool has for them."""

import platform
from dataclasses import dataclass

from toolkit.errors import CosError


@dataclass(frozen=True)
class Arch:
    name: str  # the project's name: x86_64, aarch64
    deb: str  # Debian's: amd64, arm64
    triplet: str  # Debian's multiarch library folder: x86_64-linux-gnu
    oci: str  # OCI platform architecture
    qemu_system: str  # qemu-system-<this>
    grub_platform: str  # grub-mkimage -O
    efi_boot_file: str  # removable-media path on the ESP
    console: str  # serial console device in the guest
    grub_efi_package: str  # GRUB modules for grub-mkimage, taken from the image itself
    firmware_code: tuple[str, ...]  # candidates, first existing wins
    firmware_vars: tuple[str, ...]


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        name="x86_64",
        deb="amd64",
        triplet="x86_64-linux-gnu",
        oci="amd64",
        qemu_system="x86_64",
        grub_platform="x86_64-efi",
        efi_boot_file="BOOTX64.EFI",
        console="ttyS0",
        grub_efi_package="grub-efi-amd64-bin",
        firmware_code=("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd"),
        firmware_vars=("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ),
    "aarch64": Arch(
        name="aarch64",
        deb="arm64",
        triplet="aarch64-linux-gnu",
        oci="arm64",
        qemu_system="aarch64",
        grub_platform="arm64-efi",
        efi_boot_file="BOOTAA64.EFI",
        console="ttyAMA0",
        grub_efi_package="grub-efi-arm64-bin",
        firmware_code=("/usr/share/AAVMF/AAVMF_CODE.fd",),
        firmware_vars=("/usr/share/AAVMF/AAVMF_VARS.fd",),
    ),
}


def host_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def get_arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise CosError(f"unknown arch {name!r}; valid: {', '.join(ARCHES)}") from None


def resolve_arches(name: str | None, allowed: list[str] | None = None) -> list[Arch]:
    """'all' means every arch (of the flavor when `allowed` is given); None means the host's."""
    if name in (None, ""):
        name = host_arch()
    names = list(allowed or ARCHES) if name == "all" else [name]
    arches = [get_arch(n) for n in names]
    if allowed is not None:
        for arch in arches:
            if arch.name not in allowed:
                raise CosError(
                    f"arch {arch.name!r} is not built by this flavor; valid: {', '.join(allowed)}"
                )
    return arches
