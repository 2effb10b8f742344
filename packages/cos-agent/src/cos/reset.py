"""`cos reset` (from recovery): rebuild the active and passive slots from the recovery
image (or a signed OCI image), clear the boot assessment and the menu choices, and keep
COS_PERSISTENT and COS_OEM unless told to wipe them. `cos reboot --recovery`: get there.

Order, as for an upgrade: the new slot is written under a new name and synced, then the
pointer names it (one rename), then the old slots are deleted. A power cut before the
rename leaves the old system bootable; after it, the new one.
"""

import os
import subprocess

from cos import install, layout, slots
from cos.errors import CosError
from cos.files import fsync_dir
from cos.partitions import device, mounted, mountpoint_of
from cos.progress import Progress
from cos.runner import run
from cos.stages import run_stage, target_root


def to_recovery(reboot: bool) -> str:
    """The next boot (only) starts the recovery system."""
    slots.update_grubenv(next_entry="recovery")
    if reboot:
        subprocess.run(["systemctl", "--no-block", "reboot"], check=False)
        return "rebooting into recovery (the boot after it starts the active system again)"
    return "the next boot only starts the recovery system; reboot to start it"


def wipe(label: str, steps: Progress) -> None:
    dev = device(label)
    if dev is None:
        raise CosError(f"no partition labelled {label} to wipe")
    with steps.step(f"wiping {label} ({dev})"):
        current = mountpoint_of(dev)
        if current:
            run(["umount", current], what=f"unmounting {label} from {current}")
        install.make_ext4(dev, label)


def reset(
    image: str | None = None,
    verify: bool = True,
    wipe_persistent: bool = False,
    wipe_oem: bool = False,
    steps: Progress | None = None,
) -> str:
    steps = steps or Progress()
    boot = slots.current_boot()
    if boot.get("slot") != "recovery":
        raise CosError(
            f"cos reset runs only from the recovery system; this is the "
            f"{boot.get('slot', 'unknown')} system: `cos reboot --recovery` first"
        )
    if image:
        source = install.image_source(image, verify, steps)
    else:
        source = install.local_source(steps)
    run_stage("before-reset", steps)
    with mounted("COS_STATE", writable=True) as root:
        try:
            old = slots.read_pointer(root)
        except CosError:
            old = None  # a pointer lost or damaged: reset is how to get one back
        (root / slots.SLOTS).mkdir(parents=True, exist_ok=True)
        if old is not None:
            for leftover in slots.leftovers(root, old):
                steps.say(f"removing {leftover.name}, left by an interrupted run")
                leftover.unlink()
        else:
            for stale in (root / slots.SLOTS).iterdir():
                stale.unlink()
        free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
        if source.slot_mib * layout.MiB > free:
            raise CosError(
                f"COS_STATE: not enough space for the new system: needed {source.slot_mib} "
                f"MiB, available {free // layout.MiB} MiB"
            )
        passive = slots.next_name(root)
        active = str(int(passive) + 1)
        target = slots.image_path(root, passive)
        if source.plan is not None:
            source.slot_records = install.pull_slot(source, root, passive, steps)
        elif source.slot_image is not None:
            with steps.step(f"copying the system to slot {passive}"):
                install.copy_file(source.slot_image, target)
        else:
            with steps.step(f"making slot {passive} from {source.tree_image}"):
                install.make_slot_from_tree(source.tree_image, target, source.slot_mib)
        os.link(target, slots.image_path(root, active))
        install.record_slots(root, source, (passive, active))
        slots.update_grubenv(
            **dict.fromkeys(slots.ASSESSMENT_KEYS, ""), next_entry="", saved_entry=""
        )
        slots.write_pointer(root, slots.Pointer(active=active, passive=passive))
        if old is not None:
            for name in {old.active, old.passive}:
                for path in slots.files_of(root, name):
                    path.unlink()
        fsync_dir(root / slots.SLOTS)
        slots.record(
            root, "reset", to_slot=active, source=source.describe,
            wiped=",".join(w for w, on in (("persistent", wipe_persistent), ("oem", wipe_oem))
                           if on) or "nothing",
        )  # fmt: skip
    if wipe_persistent:
        wipe("COS_PERSISTENT", steps)
    if wipe_oem:
        wipe("COS_OEM", steps)
    with (
        mounted("COS_STATE") as state,
        mounted("COS_OEM", writable=True) as oem,
        mounted("COS_PERSISTENT", writable=True) as persistent,
        target_root(slots.image_path(state, active), oem, persistent) as root,
    ):
        run_stage("after-reset", steps, root=root)
    kept = [
        what
        for what, wiped in (("COS_PERSISTENT", wipe_persistent), ("COS_OEM", wipe_oem))
        if not wiped
    ]
    return (
        f"slots {active} (active) and {passive} (passive) hold {source.describe}; "
        f"kept: {', '.join(kept) or 'nothing'}. Reboot to start the active system."
    )
