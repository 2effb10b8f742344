"""`cos mark-good` and `cos mark-bad`: the end of a boot's assessment.

A good trial boot ends the trial. A good boot of passive after GRUB fell back from a
failed active slot makes that rollback lasting: the pointer is swapped, so the failed
slot is passive and no longer booted. A bad trial boot records why and reboots, so GRUB
falls back.
"""

from cos import slots
from cos.runner import run

MAX_REASON = 200  # the whole grubenv block is 1024 bytes


def mark_good() -> str:
    name = slots.booted_name(slots.current_boot())
    if name is None:
        return "not booted from a slot: nothing to mark"
    env = slots.read_grubenv()
    with slots.state_partition() as root:
        pointer = slots.read_pointer(root)
    if name == pointer.active:
        stale = {key: "" for key in slots.ASSESSMENT_KEYS if env.get(key)}
        if not stale:
            return f"slot {name} is good"
        slots.update_grubenv(**stale)
        return f"slot {name} marked good"
    if name == pointer.passive and env.get("cos_failed") == pointer.active:
        reason = env.get("cos_fail_reason") or "did not reach the assessment"
        with slots.state_partition(writable=True) as root:
            # History first: a power cut before the swap repeats all of this next boot.
            slots.record(
                root, "rollback", from_slot=pointer.active, to_slot=name, reason=reason,
                automatic="yes",
            )  # fmt: skip
            slots.write_pointer(root, pointer.swapped())
        slots.update_grubenv(**dict.fromkeys(slots.ASSESSMENT_KEYS, ""))
        return f"slot {pointer.active} failed its trial boot ({reason}); slot {name} is active"
    return f"slot {name} (passive) booted by choice; nothing to mark"


def is_trial_boot() -> bool:
    name = slots.booted_name(slots.current_boot())
    if name is None:
        return False
    with slots.state_partition() as root:
        pointer = slots.read_pointer(root)
    return name == pointer.active and slots.read_grubenv().get("cos_tentative") == name


def mark_bad(reason: str, reboot: bool = True) -> str:
    """On a trial boot: keep `reason` for `cos status`, then reboot so GRUB falls back."""
    if not is_trial_boot():
        return f"not a trial boot; staying up ({reason})"
    slots.update_grubenv(cos_fail_reason=" ".join(reason.split())[:MAX_REASON])
    if reboot:
        with open("/dev/console", "w") as console:
            console.write(f"cOS: trial boot failed ({reason}); rebooting to fall back\n")
        run(["systemctl", "reboot"], what="rebooting after a failed trial boot")
    return f"trial boot failed ({reason}); rebooting"
