"""NoCloud seed: an ISO labelled `cidata` with user-data and meta-data."""

import copy
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from vm.errors import VmError

CloudConfig = dict[str, Any] | str | None


def parse_cloud_config(extra: CloudConfig) -> dict[str, Any]:
    """A dict as is; a string must be `#cloud-config` YAML holding a mapping."""
    if extra is None:
        return {}
    if isinstance(extra, dict):
        return copy.deepcopy(extra)
    if not isinstance(extra, str):
        raise VmError(
            f"cloud-config must be a dict or a #cloud-config string, not {type(extra).__name__}"
        )
    if not extra.lstrip().startswith("#cloud-config"):
        raise VmError("cloud-config string must start with '#cloud-config'")
    try:
        data = yaml.safe_load(extra)
    except yaml.YAMLError as exc:
        raise VmError(f"cloud-config is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VmError(f"cloud-config must be a mapping, got {type(data).__name__}")
    return data


def merge_cloud_config(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key, lists append (so a test's keys add to the harness's),
    anything else from `extra` wins."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_cloud_config(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = [*merged[key], *copy.deepcopy(value)]
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def user_data(hostname: str, public_key: str, extra: CloudConfig = None) -> str:
    base = {"hostname": hostname, "ssh_authorized_keys": [public_key]}
    merged = merge_cloud_config(base, parse_cloud_config(extra))
    return "#cloud-config\n" + yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)


def meta_data(instance_id: str, hostname: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def _iso_command(out: Path, folder: Path) -> list[str]:
    if shutil.which("xorriso"):
        return [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "cidata",
            "-J",
            "-R",
            "-o",
            str(out),
            str(folder),
        ]
    for tool in ("genisoimage", "mkisofs"):
        if shutil.which(tool):
            return [tool, "-quiet", "-V", "cidata", "-J", "-R", "-o", str(out), str(folder)]
    raise VmError("no ISO tool found: install it with `apt-get install xorriso`")


def make_seed_iso(
    dest: Path, *, hostname: str, public_key: str, instance_id: str, extra: CloudConfig = None
) -> Path:
    """Write the seed ISO at `dest` (atomically: a failure leaves no file)."""
    documents = {
        "user-data": user_data(hostname, public_key, extra),
        "meta-data": meta_data(instance_id, hostname),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cidata-", dir=dest.parent) as tmp:
        folder = Path(tmp) / "root"
        folder.mkdir()
        for name, text in documents.items():
            (folder / name).write_text(text)
        out = Path(tmp) / "seed.iso"
        proc = subprocess.run(
            _iso_command(out, folder), capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            raise VmError(f"building the seed ISO failed: {proc.stderr.strip()}")
        os.replace(out, dest)
    return dest
