"""`cos rollback`: go back to the previous system (the passive slot) at the next boot."""

from cos import slots
from cos.errors import CosError


def rollback(once: bool = False) -> str:
    with slots.state_partition(writable=not once) as root:
        pointer = slots.read_pointer(root)
        if not slots.image_path(root, pointer.passive).is_file():
            raise CosError(f"{slots.image_path(root, pointer.passive)}: missing; no rollback")
        if once:
            slots.update_grubenv(next_entry="passive")
            return f"the next boot only boots slot {pointer.passive} (passive)"
        slots.record(
            root, "rollback", from_slot=pointer.active, to_slot=pointer.passive,
            reason="requested (cos rollback)", automatic="no",
        )  # fmt: skip
        slots.write_pointer(root, pointer.swapped())
    # The old active is passive now: a trial or failure recorded for it means nothing.
    slots.update_grubenv(**dict.fromkeys(slots.ASSESSMENT_KEYS, ""), next_entry="")
    return (
        f"slot {pointer.passive} is active from the next boot on; "
        f"slot {pointer.active} is passive (`cos rollback` again returns to it)"
    )
