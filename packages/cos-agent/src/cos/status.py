"""`cos status`: the booted slot, what each slot holds, the assessment and the history."""

from cos import osrelease, slots, stages
from cos.errors import CosError


def gather() -> dict:
    """Everything `cos status` shows; a part that cannot be read is reported, not fatal."""
    release = osrelease.read()
    boot = slots.current_boot()
    status: dict = {
        "boot": boot,
        "booted": boot.get("slot", "unknown"),
        "flavor": release.get("VARIANT_ID", ""),
        "version": release.get("IMAGE_VERSION", release.get("VERSION_ID", "")),
        "pretty_name": release.get("PRETTY_NAME", ""),
    }
    pointer = None
    try:
        with slots.state_partition() as root:
            pointer = slots.read_pointer(root)
            status["slots"] = {
                role: {"name": name, **slots.slot_info(root, name)}
                for role, name in (("active", pointer.active), ("passive", pointer.passive))
            }
            status.update(slots.history(root))
    except CosError as exc:
        status["state_error"] = str(exc)
    status.update(recovery_status())
    status["cloud_config"] = stages.last_runs()
    try:
        status["grubenv"] = env = slots.read_grubenv()
    except CosError as exc:
        status["grubenv_error"] = str(exc)
        env = {}
    if pointer is not None:
        name = slots.booted_name(boot)
        if name == pointer.active:
            status["booted"] = "active"
        elif name == pointer.passive:
            status["booted"] = "passive"
        status["assessment"] = assessment(env, pointer)
    return status


def recovery_status() -> dict:
    """What the recovery image GRUB boots holds (cos.recovery)."""
    from cos import recovery
    from cos.partitions import mounted

    try:
        with mounted("COS_RECOVERY") as root:
            return {"recovery": recovery.describe_image(root)}
    except CosError as exc:
        return {"recovery_error": str(exc)}


def assessment(env: dict[str, str], pointer: slots.Pointer) -> str:
    if env.get("cos_failed") == pointer.active:
        reason = env.get("cos_fail_reason") or "did not reach the assessment"
        return f"slot {pointer.active} failed its trial boot ({reason}); passive boots"
    if env.get("cos_tentative") == pointer.active:
        return f"slot {pointer.active} on trial (boots started: {env.get('cos_attempts') or 0})"
    return "good"


def describe(slot: dict) -> str:
    parts = [
        f"slot {slot.get('name', '?')}",
        f"{slot.get('flavor', '?')} {slot.get('version', '?')}",
        slot.get("digest") or slot.get("source") or "",
        f"written {slot['written']}" if slot.get("written") else "",
    ]
    return "  ".join(p for p in parts if p)


def describe_recovery(info: dict) -> str:
    digest = info.get("digest") or info.get("manifest") or ""
    parts = [
        f"image {info.get('name', '?')}",
        f"{info.get('flavor', '?')} {info.get('version', '?')}",
        digest,
        info.get("source"),
    ]
    return "  ".join(p for p in parts if p)


def render(status: dict) -> str:
    lines = [
        f"system:     {status['pretty_name']}",
        f"flavor:     {status['flavor']} {status['version']}",
        f"booted:     {status['booted']}",
    ]
    for role, slot in status.get("slots", {}).items():
        lines.append(f"{role + ':':11} {describe(slot)}")
    if "recovery" in status:
        lines.append(f"{'recovery:':11} {describe_recovery(status['recovery'])}")
    if "assessment" in status:
        lines.append(f"assessment: {status['assessment']}")
    for event in ("last_upgrade", "last_rollback", "last_reset"):
        if event in status:
            facts = status[event]
            detail = ", ".join(f"{k} {v}" for k, v in sorted(facts.items()) if k != "at")
            lines.append(f"{event.replace('_', ' ') + ':':11} {facts.get('at', '?')}  {detail}")
    for stage, run in status.get("cloud_config", {}).items():
        for index, line in enumerate(stages.describe_run(stage, run)):
            lines.append(f"{'cloud-config:' if index == 0 else '':14}{line}")
    for key in ("state_error", "grubenv_error", "recovery_error"):
        if key in status:
            lines.append(f"error:      {status[key]}")
    return "\n".join(lines)
