"""GRUB for the ESP: an EFI binary with its modules and early config built in.

The modules come from the image's own grub-efi-<arch>-bin, so the host needs only
grub-mkimage (grub-common) for either arch. The files grub.cfg, early.cfg and the
module list come from the image's cos-grub package.
"""

import tempfile
from pathlib import Path

from toolkit.arch import Arch
from toolkit.errors import CosError
from toolkit.runner import run

GRUB_SHARE = "usr/share/cos/grub"


def grub_modules(rootfs: Path) -> list[str]:
    text = (rootfs / GRUB_SHARE / "modules").read_text()
    return [m for line in text.splitlines() for m in line.split("#", 1)[0].split()]


def build_efi_binary(
    rootfs: Path, arch: Arch, output: Path, early_config: Path | None = None
) -> None:
    module_dir = rootfs / "usr/lib/grub" / arch.grub_platform
    if not module_dir.is_dir():
        raise CosError(
            f"{rootfs}: no GRUB modules in /{module_dir.relative_to(rootfs)}; "
            f"is {arch.grub_efi_package} in the image?"
        )
    early = (early_config or rootfs / GRUB_SHARE / "early.cfg").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", dir=output.parent) as config:
        config.write(embedded_config(early))
        config.flush()
        run(
            [
                "grub-mkimage",
                "--directory",
                str(module_dir),
                "--format",
                arch.grub_platform,
                "--output",
                str(output),
                "--config",
                config.name,
                "--prefix",
                "/EFI/cos",
                *grub_modules(rootfs),
            ],
            what=f"grub-mkimage for {arch.grub_platform}",
        )


def embedded_config(text: str) -> str:
    """The early config without comment lines: GRUB runs an embedded config before its
    normal parser is up, and the one it has prints "Unknown command `#'" for each."""
    return "".join(
        line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#")
    )


def new_grubenv(path: Path) -> None:
    run(["grub-editenv", str(path), "create"], what="grub-editenv create")
