"""The installer ISO: a hybrid image that boots (UEFI, both arches) a live system from the
recovery image. Made with xorriso; its EFI System image is a small FAT file made with
mtools, so again nothing is mounted.
"""

import tempfile
from pathlib import Path

from toolkit.arch import Arch
from toolkit.disk import layer_paths, system_info, write_info
from toolkit.grub import GRUB_SHARE, build_efi_binary
from toolkit.runner import run

VOLUME_ID = "COS_LIVE"


def build_iso(
    rootfs: Path,
    recovery_image: Path,
    arch: Arch,
    output: Path,
    epoch: int,
    slot_image: Path | None = None,
    oci_layout: Path | None = None,
) -> None:
    """The live system is the recovery image; `slot_image` (the built slot, with
    cOS/system.json saying what it holds and cOS/system.layers.json what its layers
    wrote) is what `cos install` copies to the disk."""
    with tempfile.TemporaryDirectory(prefix="cos-iso-", dir=output.parent) as tmp:
        work = Path(tmp)
        tree = work / "tree"
        (tree / "cOS").mkdir(parents=True)
        (tree / "boot/grub").mkdir(parents=True)
        (tree / "cOS/recovery.img").hardlink_to(recovery_image)
        if slot_image is not None:
            (tree / "cOS/system.img").hardlink_to(slot_image)
            info = system_info(rootfs, epoch, oci_layout, "installer ISO")
            write_info(tree / "cOS/system.json", info)
            if oci_layout is not None:  # so the first upgrade pulls only what is new
                records = {"layers": layer_paths(oci_layout, info["layers"])}
                write_info(tree / "cOS/system.layers.json", records)
        (tree / "boot/grub/grub.cfg").write_bytes((rootfs / GRUB_SHARE / "iso.cfg").read_bytes())

        efi = work / arch.efi_boot_file
        build_efi_binary(rootfs, arch, efi, early_config=rootfs / GRUB_SHARE / "iso-early.cfg")
        esp = tree / "boot/efiboot.img"
        size_kib = (efi.stat().st_size >> 10) + 512
        run(
            ["mkfs.vfat", "-C", "-n", "COS_ISO_EFI", str(esp), str(size_kib)],
            what="mkfs.vfat efiboot.img",
        )
        run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], what="mmd efiboot.img")
        run(
            ["mcopy", "-i", str(esp), str(efi), f"::/EFI/BOOT/{arch.efi_boot_file}"],
            what="mcopy EFI binary",
        )

        run(
            [
                "xorriso",
                "-as",
                "mkisofs",
                "-quiet",
                "-iso-level",
                "3",
                "-full-iso9660-filenames",
                "-volid",
                VOLUME_ID,
                "-joliet",
                "-rational-rock",
                "--modification-date=" + _iso_date(epoch),
                # El Torito EFI image, plus a GPT entry for it so the ISO also boots from USB media.
                "-eltorito-alt-boot",
                "-e",
                "boot/efiboot.img",
                "-no-emul-boot",
                "-isohybrid-gpt-basdat",
                "-output",
                str(output),
                str(tree),
            ],
            what="xorriso installer ISO",
        )


def _iso_date(epoch: int) -> str:
    import time

    return time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch))
