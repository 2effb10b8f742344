"""GRUB for the ESP: an EFI binary with its modules and early config built in.

The modules come from the image's own grub-efi-<arch>-bin, so the host needs only
grub-mkimage (grub-common) for either arch. The files grub.cfg, early.cfg and the
module list come from the image's cos-grub package. The command itself is the agent's
(cos.bootloader), which the installer on a machine runs too.
"""

import tempfile
from pathlib import Path

from cos.bootloader import embedded_config, grub_modules, mkimage_command
from toolkit.arch import Arch
from toolkit.runner import run

GRUB_SHARE = "usr/share/cos/grub"
__all__ = ["GRUB_SHARE", "build_efi_binary", "embedded_config", "grub_modules", "new_grubenv"]


def build_efi_binary(
    rootfs: Path, arch: Arch, output: Path, early_config: Path | None = None
) -> None:
    early = (early_config or rootfs / GRUB_SHARE / "early.cfg").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", dir=output.parent) as config:
        config.write(embedded_config(early))
        config.flush()
        command = mkimage_command(
            rootfs, arch.grub_platform, arch.grub_efi_package, output, Path(config.name)
        )
        run(command, what=f"grub-mkimage for {arch.grub_platform}")


def new_grubenv(path: Path) -> None:
    run(["grub-editenv", str(path), "create"], what="grub-editenv create")
