"""The recovery image: the rootfs as one squashfs file, booted by the `recovery` entry, and
what a built disk's COS_RECOVERY holds (the agent's cos/recovery.py documents it)."""

import json
import os
from pathlib import Path

from cos import recovery
from toolkit.runner import run

FIRST_RECOVERY = "1"  # the recovery image's generation on a fresh disk


def make_recovery_image(rootfs: Path, output: Path, epoch: int) -> None:
    run(
        [
            *recovery.squashfs_command(rootfs, output),
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


def recovery_partition_files(
    image: Path, info: dict, work: Path, records: list[dict] | None = None
) -> dict[str, Path]:
    """COS_RECOVERY's content: image 1, what it holds (and what its layers wrote), and the
    pointer naming it."""
    name = FIRST_RECOVERY
    folder = recovery.IMAGES
    files = {str(folder / f"{name}.img"): image}
    meta = work / "recovery.json"
    meta.write_text(json.dumps({**info, "name": name}, indent=2, sort_keys=True) + "\n")
    files[str(folder / f"{name}.json")] = meta
    if records is not None:
        layers = work / "recovery.layers.json"
        layers.write_text(json.dumps({"layers": records}, sort_keys=True) + "\n")
        files[str(folder / f"{name}.layers.json")] = layers
    pointer = work / "recovery.env"
    pointer.write_bytes(recovery.pointer_bytes(name))
    files[str(recovery.POINTER)] = pointer
    return files
