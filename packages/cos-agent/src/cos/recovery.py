"""The recovery image on COS_RECOVERY: which one GRUB boots, what it holds, and putting a
new one in place (`cos install`, `cos upgrade --recovery`).

On COS_RECOVERY:
    cOS/recovery.env            the pointer: a GRUB environment block, cos_recovery=N;
                                replaced only by one atomic rename
    cOS/recovery/N.img          recovery images (squashfs), N a generation that only grows
    cOS/recovery/N.json         what image N holds: flavor, version, image, digest, layers
    cOS/recovery/N.layers.json  for an image made from OCI layers, what each layer above
                                the first wrote (as cos.slots records for a slot)
A new image is written whole under a name nothing points to, synced, recorded, and only
then named by the pointer; the old one is deleted after. A power cut at any instant
leaves the old image or the new one bootable, never a partial one. COS_RECOVERY has room
for two images (cos.layout) for that.

`cos upgrade --recovery` makes the new image from a signed OCI image: the layers are
written as a scratch slot on COS_STATE exactly as `cos upgrade` writes a slot (by digest,
checked; starting from a copy of the active slot when it holds the first layers), and
the squashfs is made from that slot's tree.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cos import grubenv, slots
from cos.errors import CosError
from cos.files import fsync_dir, read_json, write_json
from cos.progress import Progress
from cos.runner import run

POINTER = Path("cOS/recovery.env")
IMAGES = Path("cOS/recovery")
SCRATCH = "recovery-tree"  # the scratch slot's name on COS_STATE: no slot is named so
WORK = Path("/run/cos/recovery")
MiB = 1 << 20


def squashfs_command(tree: Path, output: Path) -> list[str]:
    """mksquashfs as the build and the machine both make the recovery image: gzip, which
    every GRUB's squash4 reads; level 1 builds 8x faster than 9 for 7% more bytes."""
    return [
        "mksquashfs", str(tree), str(output), "-comp", "gzip", "-Xcompression-level", "1",
        "-noappend", "-no-progress", "-quiet",
    ]  # fmt: skip


def image_path(root: Path, name: str) -> Path:
    return root / IMAGES / f"{name}.img"


def info_path(image: Path) -> Path:
    return image.with_suffix(".json")


def layers_path(image: Path) -> Path:
    return image.with_suffix(".layers.json")


def current_name(root: Path) -> str:
    path = root / POINTER
    try:
        name = grubenv.read(path).get("cos_recovery", "")
    except FileNotFoundError:
        raise CosError(f"COS_RECOVERY: {POINTER} missing; no recovery image is named") from None
    if not name.isdigit():
        raise CosError(f"COS_RECOVERY: {POINTER}: cos_recovery={name!r} is not an image name")
    return name


def current_image(root: Path) -> Path:
    image = image_path(root, current_name(root))
    if not image.is_file():
        raise CosError(f"COS_RECOVERY: {image.relative_to(root)} (named by {POINTER}) missing")
    return image


def pointer_bytes(name: str) -> bytes:
    return grubenv.render({"cos_recovery": name}, POINTER)


def next_name(root: Path) -> str:
    folder = root / IMAGES
    numbers = [int(p.stem) for p in folder.glob("*.img")] if folder.is_dir() else []
    return str(max(numbers, default=0) + 1)


def remove_all_but(root: Path, keep: str | None) -> list[str]:
    """Delete what no pointer names (an interrupted run's partial image, the old image
    after a switch); the names removed."""
    folder = root / IMAGES
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.lstrip(".").split(".")[0] != keep:
            path.unlink()
            removed.append(path.name)
    if removed:
        fsync_dir(folder)
    return removed


@contextmanager
def new_image(root: Path, info: dict, records: list[dict] | None = None) -> Iterator[Path]:
    """A path to write the next recovery image to. When the block ends, the image is
    synced, recorded and named by the pointer, and the one before is deleted; when it
    raises, the partial image is deleted and the pointer still names the old one."""
    try:
        old = current_name(root)
    except CosError:
        old = None
    remove_all_but(root, old)
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    name = next_name(root)
    final = image_path(root, name)
    partial = final.with_name(f".{final.name}.new")
    try:
        yield partial
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        write_json(info_path(final), {**info, "name": name})
        if records is not None:
            write_json(layers_path(final), {"layers": records})
        os.rename(partial, final)
        fsync_dir(final.parent)
    except BaseException:
        remove_all_but(root, old)
        raise
    grubenv.create(root / POINTER, {"cos_recovery": name})  # the switch
    remove_all_but(root, name)


def describe_image(root: Path) -> dict:
    """What the image GRUB boots holds, with its name."""
    image = current_image(root)
    return {**read_json(info_path(image)), "name": image.stem}


def check_space(root: Path, needed: int, what: str) -> None:
    free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
    if needed > free:
        raise CosError(
            f"COS_RECOVERY: not enough space for {what}: needed about {needed // MiB} MiB, "
            f"available {free // MiB} MiB beside the current image"
        )


def upgrade_recovery(
    reference: str, check: bool = True, dry_run: bool = False, progress: Progress | None = None
) -> str:
    """Pull, verify and write a new recovery image; switch to it only when it is whole."""
    from cos import upgrade

    progress = progress or Progress()
    booted = slots.current_boot().get("slot", "unknown")
    if booted not in ("active", "passive"):
        # From recovery, the old image could not be deleted from under the running system
        # (COS_RECOVERY would not go read-only again); live has no disk of its own.
        raise CosError(
            f"cos upgrade --recovery runs from the active or passive system; this is the "
            f"{booted} system"
        )
    with upgrade.one_upgrade_at_a_time():
        plan = upgrade.resolve_verified(reference, check, progress)
        with slots.state_partition(writable=not dry_run) as state:
            pointer = slots.read_pointer(state)
            running = slots.image_path(state, pointer.active)
            start = upgrade.plan_start(state, pointer.active, plan)
            size = upgrade.slot_bytes(plan, running)
            if start.keep:
                size = max(size, running.stat().st_size)
            pulled = sum(int(layer["size"]) for layer in plan.layers[start.keep :])
            if not dry_run:  # what an interrupted run left takes no room from this one
                for leftover in slots.leftovers(state, pointer):
                    progress.stage(f"removing {leftover.name}, left by an interrupted run")
                    leftover.unlink()
            with _recovery_partition(writable=not dry_run) as root:
                if not dry_run:
                    for name in remove_all_but(root, current_name(root)):
                        progress.stage(f"removing {name}, left by an interrupted run")
                # The squashfs is about as big as the image's gzip layers (same content,
                # same compressor): 121.2 MB against 121.1 MB for x86_64 trixie.
                check_space(root, plan.download_bytes, "the new recovery image")
            upgrade.check_space(state, size)
            if dry_run:
                return (
                    f"would write a recovery image from {plan.repository}@{plan.digest}, "
                    f"pulling {pulled / MiB:.1f} of {plan.download_bytes / MiB:.1f} MiB"
                )
            try:
                records = upgrade.write_slot(plan, state, SCRATCH, size, progress, running, start)
                with _recovery_partition(writable=True) as root:
                    info = {**upgrade.slot_facts(plan, ""), "source": "cos upgrade --recovery"}
                    with new_image(root, info, records) as partial:
                        with progress.step("making the recovery image (squashfs)"):
                            make_squashfs(slots.image_path(state, SCRATCH), partial)
                    made = describe_image(root)
            finally:  # the scratch slot, whole or partial
                for path in (state / slots.SLOTS).glob(f"*{SCRATCH}*"):
                    path.unlink()
    return (
        f"recovery image {made['name']} holds {plan.repository}@{plan.digest} "
        f"({made.get('flavor', '?')} {made.get('version', '?')}; pulled {pulled / MiB:.1f} of "
        f"{plan.download_bytes / MiB:.1f} MiB); the recovery entry boots it from now on"
    )


def make_squashfs(slot_image: Path, output: Path) -> None:
    """The slot's tree as a squashfs (its lost+found left out: the build's has none)."""
    tree = WORK / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    run(["mount", "-o", "loop,ro", str(slot_image), str(tree)], what=f"mounting {slot_image}")
    try:
        run(
            [*squashfs_command(tree, output), "-e", "lost+found"],
            what=f"mksquashfs {output.name}",
        )
    except CosError as exc:
        if "No space left" in str(exc):
            raise CosError(
                f"COS_RECOVERY: no space left for the new recovery image: {exc}"
            ) from None
        raise
    finally:
        run(["umount", str(tree)], what=f"unmounting {slot_image}")


@contextmanager
def _recovery_partition(writable: bool) -> Iterator[Path]:
    from cos.partitions import mounted

    with mounted("COS_RECOVERY", writable=writable) as root:
        yield root
