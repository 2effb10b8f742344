"""cloud-init's #cloud-config keys as steps of the stage syntax, placed in the stages where
cloud-init's module order runs them (bootcmd first; hostname, files, users and SSH before
sshd starts; deferred files, runcmd and user scripts once the network is up).

cOS starts every boot from its image (/ is volatile), so what cloud-init does once per
instance is done at every boot here; that is how the result stays the same."""

from collections.abc import Callable
from dataclasses import dataclass

from cos_cloud_config import schema
from cos_cloud_config.actions import access, commands, files, users

USER_FIELDS = {
    **users.USER_FIELDS,
    "name": schema.STR,
    "hashed_passwd": schema.STR,
    "plain_text_passwd": schema.STR,
    "ssh_import_id": schema.ANY,
}
CLOUD_USER = schema.one_of(
    schema.STR,
    schema.record(USER_FIELDS, required=("name",), strict=False),
    name="a name or a mapping",
)
USERS = schema.one_of(
    schema.STR, schema.list_of(CLOUD_USER), schema.map_of(schema.ANY), name="a list of users"
)
WRITE_FILES = schema.list_of(files.FILE)
NTP = schema.record(
    {
        "enabled": schema.BOOL,
        "servers": schema.list_of(schema.STR),
        "pools": schema.list_of(schema.STR),
        "ntp_client": schema.STR,
        "config": schema.ANY,
    },  # fmt: skip
    strict=False,
)
RESOLV_CONF = schema.record(
    {
        "nameservers": schema.list_of(schema.STR),
        "searchdomains": schema.list_of(schema.STR),
        "domain": schema.STR,
        "options": schema.ANY,
    },  # fmt: skip
    strict=False,
)


@dataclass(frozen=True)
class Key:
    key: str  # cloud-init's
    stage: str  # where cloud-init's module order runs it
    check: schema.Check
    # (value, the whole document, warnings) -> the step's actions
    to_step: Callable[[object, dict, list], dict]


def _bootcmd(value, doc, warnings):
    return {"commands": [commands.script(value)]}


def _runcmd(value, doc, warnings):
    return {"commands": [commands.script(value)]}


def _write_files(deferred: bool):
    def translate(value, doc, warnings):
        chosen = [dict(f) for f in value if bool(f.get("defer")) == deferred]
        for entry in chosen:
            entry.pop("defer", None)
            entry.setdefault("permissions", "0644")  # cloud-init's defaults
            entry.setdefault("owner", "root:root")
        return {"files": chosen} if chosen else {}

    return translate


def _hostname(value, doc, warnings):
    """hostname, fqdn, prefer_fqdn_over_hostname and manage_etc_hosts, as cloud-init reads them."""
    if doc.get("preserve_hostname"):
        return {}
    hostname, fqdn = doc.get("hostname"), doc.get("fqdn")
    if fqdn:
        short = hostname or str(fqdn).split(".")[0]
    elif hostname and "." in str(hostname):
        fqdn, short = hostname, str(hostname).split(".")[0]
    else:
        short = hostname
    if not short:
        return {}
    step = {"hostname": str(fqdn if doc.get("prefer_fqdn_over_hostname") and fqdn else short)}
    manage = doc.get("manage_etc_hosts")
    if fqdn or manage:
        step["hosts"] = {
            "127.0.1.1": [str(fqdn), str(short)] if fqdn and fqdn != short else [str(short)]
        }
    if manage is True or manage == "template":
        step["hosts"] |= {
            "127.0.0.1": ["localhost"],
            "::1": ["localhost", "ip6-localhost", "ip6-loopback"],
        }
    return step


def _users(value, doc, warnings):
    """cloud-init's list (names, mappings, `default`) -> the stage syntax's mapping."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, dict):
        value = [{"name": k, **(v or {})} for k, v in value.items()]
    result = {}
    for index, entry in enumerate(value):
        if entry == "default":
            continue  # cOS's default user is root: nothing to create
        if isinstance(entry, str):
            entry = {"name": entry}
        spec = {"lock_passwd": True}  # cloud-init's default: no password logins
        for field, item in entry.items():
            if field == "name":
                continue
            if field == "hashed_passwd":
                spec["passwd"] = item
            elif field == "plain_text_passwd":
                warnings.append(f"users[{index}]: plain_text_passwd refused; give passwd as a hash")
            elif field == "ssh_import_id":
                warnings.append(f"users[{index}]: ssh_import_id needs the internet; ignored")
            elif field in USER_FIELDS:
                spec[field] = item
            else:
                warnings.append(f"users[{index}].{field}: unknown user field; ignored")
        result[str(entry["name"])] = spec
    return {"users": result} if result else {}


def _root_keys(value, doc, warnings):
    return {"ssh_authorized_keys": {"root": value}}


def _ntp(value, doc, warnings):
    if value.get("enabled") is False:
        return {}
    client = value.get("ntp_client", "auto")
    if client not in ("auto", "systemd-timesyncd"):
        warnings.append(f"ntp.ntp_client {client!r}: cOS configures systemd-timesyncd")
    servers = [*(value.get("servers") or []), *(value.get("pools") or [])]
    return {"timesyncd": {"NTP": " ".join(servers)}} if servers else {}


def _resolv_conf(value, doc, warnings):
    if not doc.get("manage_resolv_conf"):
        warnings.append("resolv_conf: applies only with manage_resolv_conf: true; ignored")
        return {}
    search = [
        *([value["domain"]] if value.get("domain") else []),
        *(value.get("searchdomains") or []),
    ]
    options = value.get("options") or {}
    flags = (
        [k if v is True else f"{k}:{v}" for k, v in options.items()]
        if isinstance(options, dict)
        else []
    )
    return {
        "dns": {"nameservers": value.get("nameservers") or [], "search": search, "options": flags}
    }


def _same(action: str):
    return lambda value, doc, warnings: {action: value}


# In cloud-init's module order within each stage.
KEYS = [
    Key("bootcmd", "boot.before", commands.COMMANDS, _bootcmd),
    Key("write_files", "boot", WRITE_FILES, _write_files(deferred=False)),
    Key("hostname", "boot", schema.STR, _hostname),
    Key("fqdn", "boot", schema.STR, lambda v, d, w: {} if "hostname" in d else _hostname(v, d, w)),
    Key("resolv_conf", "boot", RESOLV_CONF, _resolv_conf),
    Key("users", "boot", USERS, _users),
    Key("ssh_authorized_keys", "boot", schema.list_of(schema.STR), _root_keys),
    Key("disable_root", "boot", schema.BOOL, _same("disable_root")),
    Key(
        "ssh_pwauth",
        "boot",
        schema.one_of(schema.BOOL, schema.STR, name="true or false"),
        lambda v, d, w: {
            "ssh_pwauth": v if isinstance(v, bool) else str(v).lower() in ("yes", "true")
        },
    ),  # fmt: skip
    Key("chpasswd", "boot", access.CHPASSWD, _same("chpasswd")),
    Key("timezone", "boot", schema.STR, _same("timezone")),
    Key("ntp", "boot", NTP, _ntp),
    Key("write_files", "network", WRITE_FILES, _write_files(deferred=True)),
    Key("runcmd", "network", commands.COMMANDS, _runcmd),
]
# Keys read by another key's translation, the sources or the installer (`install:`,
# read by `cos install --auto`), not on their own.
COMPANIONS = {
    "install",
    "prefer_fqdn_over_hostname",
    "manage_etc_hosts",
    "preserve_hostname",
    "manage_resolv_conf",
    "vendor_data",
}
KNOWN_KEYS = {key.key for key in KEYS} | COMPANIONS
UNSUPPORTED = {
    **dict.fromkeys(
        [
            "packages",
            "package_update",
            "package_upgrade",
            "package_reboot_if_required",
            "apt",
            "snap",
            "yum_repos",
            "zypper",
        ],
        "packages come with the image (build a derivative)",
    ),  # fmt: skip
    **dict.fromkeys(
        ["growpart", "resize_rootfs"], "COS_PERSISTENT grows by itself (a layout step)"
    ),
    **dict.fromkeys(
        ["mounts", "swap", "disk_setup", "fs_setup"], "disks are laid out by `cos install`"
    ),
    **dict.fromkeys(
        [
            "phone_home",
            "ssh_import_id",
            "final_message",
            "power_state",
            "ca_certs",
            "locale",
            "keyboard",
            "rsyslog",
            "ssh_keys",
            "ssh_genkeytypes",
            "ssh_deletekeys",
            "random_seed",
        ],
        "not supported by cOS",
    ),  # fmt: skip
}
