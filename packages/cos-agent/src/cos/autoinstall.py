"""`cos install --auto`: the unattended install of the installer ISO.

It installs when the kernel command line has cos.install=DEVICE (with
cos.install.image=REF, cos.install.config=FILE|URL, cos.install.after=reboot|poweroff|none)
or the NoCloud user-data an `install:` section:

    install:
      device: /dev/vda
      image: REGISTRY/cos/debian-trixie:1.0.1   # optional: default the live system
      config: https://.../config.yaml             # optional: stored on COS_OEM
      after: reboot                                # reboot (default), poweroff, none
      force: false                                 # overwrite partitions on the device

and does nothing otherwise. A disk that already holds partitions is refused unless
`force`, so a machine whose firmware boots the ISO again after an install does not
install in a loop.
"""

import subprocess
from pathlib import Path

from cos import install
from cos.errors import CosError

AFTER = ("reboot", "poweroff", "none")


def from_cmdline(cmdline: str) -> dict:
    keys = {
        "cos.install": "device",
        "cos.install.image": "image",
        "cos.install.config": "config",
        "cos.install.after": "after",
    }
    found = {}
    for arg in cmdline.split():
        key, sep, value = arg.partition("=")
        if key in keys and sep:
            found[keys[key]] = value
        elif arg == "cos.install.force":
            found["force"] = True
    return found


def from_user_data() -> dict:
    """The `install:` section of the NoCloud user-data, found as cos-cloud-config finds it
    (a failed import is an error: it once hid that the unattended install read nothing)."""
    try:
        from cos_cloud_config import nocloud
    except ImportError as exc:
        raise CosError(f"cannot read the NoCloud user-data: {exc}") from None
    import yaml

    cidata = nocloud.mount_volume()
    user = cidata / "user-data" if cidata else None
    if user is None or not user.exists():
        return {}
    try:
        data = yaml.load(user.read_text(), Loader=nocloud.SafeLoader)
    except yaml.YAMLError as exc:
        raise CosError(f"{user}: malformed YAML: {exc}") from None
    section = data.get("install") if isinstance(data, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise CosError(f"{user}: install: must be a mapping (device, image, config, after)")
    return section


def settings(cmdline: str, user_data: dict) -> dict:
    """The command line wins over user-data; checked before anything is written."""
    chosen = {**user_data, **from_cmdline(cmdline)}
    if not chosen:
        return {}
    unknown = set(chosen) - {"device", "image", "config", "after", "force"}
    if unknown:
        raise CosError(f"install: unknown keys {', '.join(sorted(unknown))}")
    if not chosen.get("device"):
        raise CosError("install: no device (install.device or cos.install=DEVICE)")
    after = str(chosen.get("after", "reboot"))
    if after not in AFTER:
        raise CosError(f"install: after={after!r}: one of {', '.join(AFTER)}")
    return {**chosen, "after": after}


def auto_install() -> str:
    chosen = settings(Path("/proc/cmdline").read_text(), from_user_data())
    if not chosen:
        return "no unattended install asked (no cos.install= argument, no install: section)"
    message = install.install(
        str(chosen["device"]),
        image=chosen.get("image"),
        config=chosen.get("config"),
        force=bool(chosen.get("force", False)),
    )
    print(message, flush=True)
    if chosen["after"] != "none":
        # The new disk is written, synced and unmounted, and the live system keeps nothing:
        # no need to stop its services one by one first (seconds under emulation).
        subprocess.run(["systemctl", "--force", "--no-block", chosen["after"]], check=False)
        return f"unattended install done; {chosen['after']}"
    return "unattended install done"
