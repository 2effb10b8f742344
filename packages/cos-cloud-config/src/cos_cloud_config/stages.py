"""Turning documents into the steps of one stage.

Two syntaxes: the stage syntax (`stages: {boot: [step, ...]}`) and the common
#cloud-config keys, which map to stages as cloud-init runs them: bootcmd,
hostname, users, ssh_authorized_keys and write_files at `boot`, runcmd at `network`.
"""

from cos_cloud_config.sources import Document, Loaded

STAGES = [
    "rootfs",
    "initramfs",
    "boot",
    "fs",
    "network",
    "reconcile",
    "before-install",
    "after-install",
    "before-upgrade",
    "after-upgrade",
    "before-reset",
    "after-reset",
]
CLOUD_CONFIG_STAGE = {
    "bootcmd": "boot.before",
    "hostname": "boot",
    "users": "boot",
    "ssh_authorized_keys": "boot",
    "write_files": "boot",
    "runcmd": "network",
}
STEP_KEYS = {"name", "commands", "files", "hostname", "users", "ssh_authorized_keys"}


def valid_stage(name: str) -> bool:
    base = name.removesuffix(".before").removesuffix(".after")
    return base in STAGES


def steps_for(stage: str, loaded: Loaded) -> list[tuple[str, dict]]:
    """(origin, step) pairs for `stage`, in source order; problems go to loaded.errors."""
    steps: list[tuple[str, dict]] = []
    hostname = loaded.meta_data.get("local-hostname")
    if stage == "boot" and hostname:
        # The datasource's name comes first; a user-data hostname overrides it.
        steps.append(("NoCloud meta-data", {"hostname": str(hostname)}))
    for doc in loaded.documents:
        steps.extend(_from_stage_syntax(stage, doc, loaded))
        steps.extend(_from_cloud_config(stage, doc, loaded))
    return steps


def _from_stage_syntax(stage: str, doc: Document, loaded: Loaded):
    stages = doc.data.get("stages")
    if stages is None:
        return []
    if not isinstance(stages, dict):
        loaded.errors.append(f"{doc.origin}: 'stages' must be a mapping of stage -> steps")
        return []
    for name in stages:
        if not valid_stage(str(name)):
            loaded.errors.append(
                f"{doc.origin}: stages.{name}: unknown stage; known: {', '.join(STAGES)}"
            )
    found = []
    for index, step in enumerate(stages.get(stage) or []):
        where = f"{doc.origin}: stages.{stage}[{index}]"
        if not isinstance(step, dict):
            loaded.errors.append(f"{where}: a step must be a mapping")
            continue
        unknown = set(step) - STEP_KEYS
        if unknown:
            loaded.errors.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        found.append((where, step))
    return found


def _from_cloud_config(stage: str, doc: Document, loaded: Loaded):
    step: dict = {}
    data = doc.data
    for key, key_stage in CLOUD_CONFIG_STAGE.items():
        if key_stage != stage or key not in data:
            continue
        value = data[key]
        if key in ("bootcmd", "runcmd"):
            step["commands"] = value
        elif key == "write_files":
            step["files"] = value
        elif key == "ssh_authorized_keys":
            # cloud-init's top-level keys go to the default user: root on cOS.
            step.setdefault("ssh_authorized_keys", {})["root"] = value
        elif key == "users":
            step["users"] = _users_from_list(value, doc, loaded)
        else:
            step[key] = value
    return [(f"{doc.origin}: #cloud-config", step)] if step else []


def _users_from_list(value, doc: Document, loaded: Loaded) -> dict:
    """cloud-init's list form of users -> the stage syntax's mapping form."""
    if isinstance(value, dict):
        return value
    users = {}
    for index, user in enumerate(value or []):
        if user == "default":
            continue
        if not isinstance(user, dict) or "name" not in user:
            loaded.errors.append(f"{doc.origin}: users[{index}]: needs a 'name'")
            continue
        users[user["name"]] = {k: v for k, v in user.items() if k != "name"}
    return users
