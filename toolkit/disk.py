"""The cOS disk image: GPT with COS_GRUB, COS_OEM, COS_RECOVERY, COS_STATE, COS_PERSISTENT.

Nothing is mounted: each filesystem is made straight into its partition's place in the
raw file (mke2fs -E offset, mkfs.vfat --offset, mtools' @@offset), so builds run
unprivileged in containers and CI runners as well.
"""

import json
import math
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from cos import osrelease
from cos.layout import MiB, Partition, disk_mib, layout, partition_table, slot_size_mib
from toolkit.arch import Arch
from toolkit.grub import build_efi_binary, new_grubenv
from toolkit.oci import blob_path, read_blob_json, top_descriptor
from toolkit.recovery import recovery_partition_files
from toolkit.runner import run


def reproducible_env(epoch: int) -> dict:
    return {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch)}


def make_ext4(
    target: Path,
    label: str,
    size_mib: int,
    content: Path | None,
    epoch: int,
    offset: int = 0,
    journal: bool = True,
) -> None:
    args = [
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        label,
        "-m",
        "0",
        "-E",
        f"root_owner=0:0,nodiscard,offset={offset}",
    ]
    if not journal:
        args += ["-O", "^has_journal"]
    if content is not None:
        args += ["-d", str(content)]
    run([*args, str(target), f"{size_mib}M"], what=f"mke2fs {label}", env=reproducible_env(epoch))


def make_slot_image(rootfs: Path, output: Path, epoch: int) -> None:
    """The system as one read-only ext4 image (no journal: it is never written)."""
    make_ext4(output, "COS_SYSTEM", slot_size_mib(rootfs), rootfs, epoch, journal=False)


def make_esp(disk: Path, part: Partition, rootfs: Path, arch: Arch, work: Path) -> None:
    offset = part.start_mib * MiB
    run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-s",
            "1",
            "-n",
            part.label,
            "--offset",
            str(offset // 512),
            str(disk),
            str(part.size_mib * 1024),
        ],
        what="mkfs.vfat COS_GRUB",
    )
    efi = work / arch.efi_boot_file
    build_efi_binary(rootfs, arch, efi)
    grubenv = work / "grubenv"
    new_grubenv(grubenv)
    image = f"{disk}@@{offset}"
    run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT", "::/EFI/cos"], what="mmd on COS_GRUB")
    for source, dest in (
        (efi, f"::/EFI/BOOT/{arch.efi_boot_file}"),
        (rootfs / "usr/share/cos/grub/grub.cfg", "::/EFI/cos/grub.cfg"),
        (grubenv, "::/EFI/cos/grubenv"),
    ):
        run(["mcopy", "-i", image, str(source), dest], what=f"mcopy {dest}")


FIRST_ACTIVE, FIRST_PASSIVE = "2", "1"  # slot generations of a fresh disk


def system_info(rootfs: Path, epoch: int, oci_layout: Path | None, source: str) -> dict:
    """What a slot made from this build holds (cOS/slots/N.json), and the recovery image
    (cOS/recovery.json) and the installer ISO's system (cOS/system.json) too."""
    release = osrelease.read(rootfs)
    info = {
        "flavor": release.get("VARIANT_ID", ""),
        "version": release.get("IMAGE_VERSION", ""),
        "source": source,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
    }
    if oci_layout is not None:
        top = top_descriptor(oci_layout)
        manifest = read_blob_json(oci_layout, top["digest"])
        info["manifest"] = top["digest"]
        info["layers"] = [layer["digest"] for layer in manifest["layers"]]
    return info


def write_info(path: Path, info: dict) -> Path:
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def slot_state_files(
    rootfs: Path, slot_image: Path, work: Path, epoch: int, oci_layout: Path | None = None
) -> dict[str, Path]:
    """COS_STATE's content (the agent's cos/slots.py documents it): both slots hold the
    built system, the pointer names 2 active and 1 passive, and each slot says what it is,
    down to the OCI image and layers of the same build it equals (an upgrade to an image
    that shares those layers pulls only the others)."""
    info = system_info(rootfs, epoch, oci_layout, "built disk")
    layer_records = layer_paths(oci_layout, info["layers"]) if oci_layout is not None else None
    files = {}
    for name in (FIRST_ACTIVE, FIRST_PASSIVE):
        files[f"cOS/slots/{name}.img"] = slot_image
        meta = work / f"slot-{name}.json"
        meta.write_text(json.dumps({**info, "name": name}, indent=2, sort_keys=True) + "\n")
        files[f"cOS/slots/{name}.json"] = meta
        if layer_records is not None:
            records = work / f"slot-{name}.layers.json"
            records.write_text(json.dumps({"layers": layer_records}, sort_keys=True) + "\n")
            files[f"cOS/slots/{name}.layers.json"] = records
    pointer = work / "state.env"
    new_grubenv(pointer)
    run(
        ["grub-editenv", str(pointer), "set", f"cos_active={FIRST_ACTIVE}",
         f"cos_passive={FIRST_PASSIVE}"],
        what="grub-editenv set the slot pointer",
    )  # fmt: skip
    files["cOS/state.env"] = pointer
    return files


def layer_paths(oci_layout: Path, digests: list[str]) -> list[dict]:
    """What a machine records of the layers above the first (see cos.slots): the paths
    each writes, and whether it only adds to the layers below (no path of theirs, no
    whiteout), so that an upgrade can take it off a copy of the slot."""
    below: set[str] = set()
    records = []
    for index, digest in enumerate(digests):
        with tarfile.open(blob_path(oci_layout, digest), "r:gz") as tar:
            paths = [os.path.normpath(name) for name in tar.getnames()]
        if index:
            added_only = not below & set(paths) and not any(
                os.path.basename(p).startswith(".wh.") for p in paths
            )
            records.append({"digest": digest, "added_only": added_only, "paths": paths})
        below.update(paths)
    return records


def slot_layer_records(state_files: dict[str, Path]) -> list[dict] | None:
    """What the built slot's layers wrote: the recovery image is the same rootfs."""
    path = state_files.get(f"cOS/slots/{FIRST_ACTIVE}.layers.json")
    return json.loads(path.read_text())["layers"] if path is not None else None


def build_disk(
    rootfs: Path,
    slot_image: Path,
    recovery_image: Path,
    arch: Arch,
    output: Path,
    epoch: int,
    oci_layout: Path | None = None,
) -> list[Partition]:
    """Write the raw disk image `output` from a finished rootfs, slot and recovery image."""
    slot_mib = math.ceil(slot_image.stat().st_size / MiB)
    recovery_mib = math.ceil(recovery_image.stat().st_size / MiB)
    parts = layout(slot_mib, recovery_mib)
    total_mib = disk_mib(parts)
    with open(output, "wb") as f:
        f.truncate(total_mib * MiB)
    run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(output)],
        what="sfdisk",
        input=partition_table(parts).encode(),
    )
    by_label = {p.label: p for p in parts}
    with tempfile.TemporaryDirectory(prefix="cos-disk-", dir=output.parent) as tmp:
        work = Path(tmp)
        make_esp(output, by_label["COS_GRUB"], rootfs, arch, work)
        state_files = slot_state_files(rootfs, slot_image, work, epoch, oci_layout)
        for label, files in (
            ("COS_STATE", state_files),
            (
                "COS_RECOVERY",
                recovery_partition_files(
                    recovery_image,
                    system_info(rootfs, epoch, oci_layout, "built disk"),
                    work,
                    slot_layer_records(state_files),
                ),
            ),
            ("COS_OEM", {}),
            ("COS_PERSISTENT", {}),
        ):
            content = work / label
            content.mkdir()
            for name, source in files.items():
                (content / name).parent.mkdir(parents=True, exist_ok=True)
                try:
                    # passive starts as a hard link of active: one copy on disk until an upgrade.
                    os.link(source, content / name)
                except OSError:
                    shutil.copy(source, content / name)
            part = by_label[label]
            make_ext4(output, label, part.size_mib, content, epoch, offset=part.start_mib * MiB)
    return parts


def make_disk_images(
    rootfs: Path,
    slot_image: Path,
    recovery_image: Path,
    oci_layout: Path,
    arch: Arch,
    raw: Path,
    qcow2: Path,
    epoch: int,
) -> None:
    """build_disk() into `raw`, and the same disk as a zstd-compressed qcow2."""
    build_disk(rootfs, slot_image, recovery_image, arch, raw, epoch, oci_layout)
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
            str(raw),
            str(qcow2),
        ],
        what="qemu-img convert to qcow2",
    )
