"""The cOS partition plan, once for the host's disk builder and the machine's installer.

GPT, 1 MiB aligned:
    COS_GRUB        vfat ESP: GRUB's EFI binary, grub.cfg, grubenv
    COS_OEM         ext4: the user's cloud-config (the install config), health checks
    COS_RECOVERY    ext4: the recovery image (squashfs; cos.recovery), room for two
    COS_STATE       ext4: the slots (room for three: active, passive, one being written)
    COS_PERSISTENT  ext4: /usr/local and the persistent paths; the rest of the disk
"""

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cos.errors import CosError

MiB = 1 << 20
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ALIGN_MIB = 1  # first partition at 1 MiB; every size a whole number of MiB
GPT_BACKUP_MIB = 1  # the backup GPT at the end (33 sectors), rounded to the alignment
GRUB_MIB = 64
OEM_MIB = 64
MIN_PERSISTENT_MIB = 128
LABELS = ("COS_GRUB", "COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT")


@dataclass
class Partition:
    label: str
    size_mib: int
    type_guid: str = LINUX_TYPE
    start_mib: int = 0

    @property
    def end_mib(self) -> int:
        return self.start_mib + self.size_mib


def tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.lstat(full).st_blocks * 512
    return total


def slot_size_mib(rootfs: Path) -> int:
    """Room for the tree as an ext4 slot image: metadata and a little headroom."""
    return math.ceil(tree_size(rootfs) * 1.15 / MiB) + 64


def recovery_partition_mib(recovery_mib: int) -> int:
    # Two images: `cos upgrade --recovery` writes the new one whole beside the old one,
    # which may be a fifth bigger.
    return 2 * recovery_mib + recovery_mib // 5 + 32


def state_partition_mib(slot_mib: int) -> int:
    return 3 * slot_mib + 64  # active, passive and, during an upgrade, the new slot


def layout(
    slot_mib: int,
    recovery_mib: int,
    persistent_mib: int = MIN_PERSISTENT_MIB,
    recovery_partition: int | None = None,
) -> list[Partition]:
    """The partitions in disk order, placed from 1 MiB on."""
    parts = [
        Partition("COS_GRUB", GRUB_MIB, ESP_TYPE),
        Partition("COS_OEM", OEM_MIB),
        Partition("COS_RECOVERY", recovery_partition or recovery_partition_mib(recovery_mib)),
        Partition("COS_STATE", state_partition_mib(slot_mib)),
        Partition("COS_PERSISTENT", persistent_mib),
    ]
    start = ALIGN_MIB
    for part in parts:
        part.start_mib = start
        start += part.size_mib
    return parts


def disk_mib(parts: list[Partition]) -> int:
    """The disk size the plan needs, backup GPT included."""
    return parts[-1].end_mib + GPT_BACKUP_MIB


def plan_for_disk(
    device: str,
    size_bytes: int,
    slot_mib: int,
    recovery_mib: int,
    persistent_mib: int | None = None,
    recovery_partition: int | None = None,
) -> list[Partition]:
    """The layout on a disk of `size_bytes`: COS_PERSISTENT gets `persistent_mib`, or the
    rest of the disk. Refuses, with the size needed, a disk too small for it."""
    needed_recovery = recovery_partition_mib(recovery_mib)
    if recovery_partition is not None and recovery_partition < needed_recovery:
        raise CosError(
            f"--recovery-size {recovery_partition} MiB is too small: the recovery image "
            f"needs {needed_recovery} MiB"
        )
    if persistent_mib is not None and persistent_mib < MIN_PERSISTENT_MIB:
        raise CosError(
            f"--persistent-size {persistent_mib} MiB is too small: at least "
            f"{MIN_PERSISTENT_MIB} MiB"
        )
    parts = layout(slot_mib, recovery_mib, persistent_mib or MIN_PERSISTENT_MIB, recovery_partition)
    needed = disk_mib(parts)
    have = size_bytes // MiB
    if have < needed:
        raise CosError(
            f"{device}: too small: {have} MiB, and this system needs at least {needed} MiB "
            f"({format_mib(needed)})"
        )
    if persistent_mib is None:  # grow to fill the disk
        parts[-1].size_mib += have - needed
    return parts


def format_mib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib} MiB"


def parse_size_mib(text: str, what: str) -> int:
    """'512', '512M', '4G', '1T' -> MiB (a bare number is MiB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([MGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise CosError(f"{what} {text!r}: not a size (examples: 512M, 4G)")
    factor = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2).upper()]
    return int(match.group(1)) * factor


def partition_table(parts: list[Partition]) -> str:
    """sfdisk's input for the plan."""
    lines = ["label: gpt", "unit: sectors"]
    for part in parts:
        lines.append(
            f"start={part.start_mib * 2048}, size={part.size_mib * 2048}, "
            f"type={part.type_guid}, name={part.label}"
        )
    return "\n".join(lines) + "\n"
