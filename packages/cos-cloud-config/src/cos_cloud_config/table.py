"""The one table of what a config can ask for: the step actions (key, shape, function,
in the order a step applies them), and cloud-init's keys with the stage cloud-init's own
module order puts them in and the actions they become (cloudinit.py)."""

from collections.abc import Callable
from dataclasses import dataclass

from cos_cloud_config import schema
from cos_cloud_config.actions import (
    access,
    commands,
    datasource,
    files,
    layout,
    system,
    units,
    users,
)
from cos_cloud_config.context import Context


@dataclass(frozen=True)
class Action:
    key: str
    check: schema.Check
    apply: Callable[[Context, object], None]


ACTIONS = [
    Action("datasource", datasource.DATASOURCE, datasource.datasource),
    Action("layout", layout.LAYOUT, layout.layout),
    Action("dns", system.DNS, system.dns),
    Action("directories", files.DIRECTORIES, files.directories),
    Action("files", files.FILES, files.files),
    Action("hostname", schema.STR, system.hostname),
    Action("hosts", system.HOSTS, system.hosts),
    Action("sysctl", system.SYSCTL, system.sysctl),
    Action("modules", schema.list_of(schema.STR), system.modules),
    Action("environment", system.ENVIRONMENT, system.environment),
    Action("users", users.USERS, users.users),
    Action("ssh_authorized_keys", users.AUTHORIZED_KEYS, users.authorized_keys),
    Action("chpasswd", access.CHPASSWD, access.chpasswd),
    Action("ssh_pwauth", schema.BOOL, access.ssh_pwauth),
    Action("disable_root", schema.BOOL, access.disable_root),
    Action("timesyncd", system.TIMESYNCD, system.timesyncd),
    Action("timezone", schema.STR, system.timezone),
    Action("systemctl", units.SYSTEMCTL, units.systemctl),
    Action("commands", commands.COMMANDS, commands.commands),
]
BY_KEY = {action.key: action for action in ACTIONS}
# Keys of a step that are not actions: how it is named, guarded and ordered.
STEP_FIELDS = {
    "name": schema.STR,
    "if": schema.STR,
    "depends_on": schema.one_of(
        schema.STR, schema.list_of(schema.STR), name="a step name or a list of them"
    ),
    "environment_file": schema.STR,  # where `environment` writes (yip), /etc/environment by default
}
# yip actions that need what an offline, image-based system does not have.
UNSUPPORTED_STEP_KEYS = {
    "downloads": "downloads need the network at boot",
    "git": "git checkouts need the network at boot",
    "packages": "packages come with the image (a derivative), not at boot",
    "unpack_images": "images are pulled by `cos upgrade`",
    "entities": "use users and files",
    "delete_entities": "use users and files",
    "systemd_firstboot": "use hostname, timezone and the other actions",
}
STAGES = [
    *("rootfs", "initramfs", "boot", "fs", "network", "reconcile"),
    *("before-install", "after-install", "before-upgrade", "after-upgrade"),
    *("before-reset", "after-reset"),
]


def valid_stage(name: str) -> bool:
    return name.removesuffix(".before").removesuffix(".after") in STAGES
