"""The NoCloud seed ISO, read back with xorriso: label, file names, contents."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vm.errors import VmError
from vm.seed import make_seed_iso, merge_cloud_config, parse_cloud_config, user_data

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHarnessKeyForTests cos-test-harness"
needs_xorriso = pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso missing")


def read_iso(iso: Path, dest: Path) -> tuple[str, dict[str, str]]:
    info = subprocess.run(
        ["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True, check=True
    )
    label = next(
        line.split(":", 1)[1].strip()
        for line in info.stdout.splitlines()
        if line.startswith("Volume Id")
    )
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
        capture_output=True, check=True,
    )  # fmt: skip
    return label, {p.name: p.read_text() for p in dest.iterdir() if p.is_file()}


@needs_xorriso
def test_seed_iso_contents(tmp_path: Path) -> None:
    extra = {
        "ssh_authorized_keys": ["ssh-ed25519 AAAAsecond user@test"],
        "write_files": [{"path": "/etc/motd", "content": "hi"}],
        "runcmd": ["touch /tmp/ran"],
    }
    iso = make_seed_iso(
        tmp_path / "m" / "seed.iso", hostname="node-1", public_key=KEY,
        instance_id="cos-test-x-1", extra=extra,
    )  # fmt: skip
    label, files = read_iso(iso, tmp_path / "out")
    assert label == "cidata"
    assert set(files) == {"user-data", "meta-data"}
    assert files["user-data"].startswith("#cloud-config\n")
    data = yaml.safe_load(files["user-data"])
    assert data["hostname"] == "node-1"
    assert data["ssh_authorized_keys"] == [KEY, "ssh-ed25519 AAAAsecond user@test"]
    assert data["write_files"] == extra["write_files"]
    assert data["runcmd"] == ["touch /tmp/ran"]
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": "cos-test-x-1", "local-hostname": "node-1"}
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["seed.iso"]  # no temp files left


@needs_xorriso
def test_seed_from_cloud_config_text(tmp_path: Path) -> None:
    text = "#cloud-config\nhostname: from-test\nbootcmd:\n  - echo hi\n"
    iso = make_seed_iso(
        tmp_path / "s.iso", hostname="h", public_key=KEY, instance_id="i", extra=text
    )
    _, files = read_iso(iso, tmp_path / "out")
    data = yaml.safe_load(files["user-data"])
    assert data["hostname"] == "from-test"  # the test's value wins
    assert data["bootcmd"] == ["echo hi"]
    assert data["ssh_authorized_keys"] == [KEY]


def test_bad_cloud_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="must start with '#cloud-config'"):
        parse_cloud_config("#!/bin/sh\necho hi\n")
    with pytest.raises(VmError, match="not valid YAML"):
        parse_cloud_config("#cloud-config\nkey: [unclosed\n")
    with pytest.raises(VmError, match="must be a mapping"):
        parse_cloud_config("#cloud-config\n- a\n- b\n")
    with pytest.raises(VmError):
        make_seed_iso(
            tmp_path / "x.iso", hostname="h", public_key=KEY, instance_id="i", extra="bad"
        )
    assert not (tmp_path / "x.iso").exists()


def test_merge_rules() -> None:
    base = {"a": {"x": 1, "y": [1]}, "l": [1], "s": "base"}
    merged = merge_cloud_config(base, {"a": {"y": [2], "z": 3}, "l": [2], "s": "extra", "n": None})
    assert merged == {"a": {"x": 1, "y": [1, 2], "z": 3}, "l": [1, 2], "s": "extra", "n": None}
    assert base == {"a": {"x": 1, "y": [1]}, "l": [1], "s": "base"}  # inputs untouched


def test_user_data_without_extra() -> None:
    data = yaml.safe_load(user_data("h", KEY))
    assert data == {"hostname": "h", "ssh_authorized_keys": [KEY]}
