"""The recovery image: the rootfs as one squashfs file, booted by the `recovery` entry."""

import os
from pathlib import Path

from toolkit.runner import run


def make_recovery_image(rootfs: Path, output: Path, epoch: int) -> None:
    # gzip, which every GRUB's squash4 reads; level 1 builds 8x faster than 9 for 7% more bytes.
    run(
        [
            "mksquashfs",
            str(rootfs),
            str(output),
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
        # mksquashfs refuses its time options when SOURCE_DATE_EPOCH is set too; `epoch`
        # already is that variable's value when the user set it.
        env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"},
    )
