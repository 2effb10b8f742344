"""Machine disks: a qcow2 overlay on the built image (raw or qcow2), grown on request."""

import json
import subprocess
from pathlib import Path

import pytest

from vm import disks
from vm.errors import VmError


@pytest.mark.parametrize("base_format", ["raw", "qcow2"])
def test_overlay_points_at_built_image(tmp_path: Path, base_format: str) -> None:
    base = tmp_path / f"base.{base_format}"
    subprocess.run(["qemu-img", "create", "-q", "-f", base_format, str(base), "64M"], check=True)
    overlay = disks.create_overlay(base, tmp_path / "o.qcow2", "128M")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(overlay)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    pinned = Path(info["backing-filename"])
    assert pinned.parent == tmp_path and pinned.stat().st_ino == base.stat().st_ino
    assert info["backing-filename-format"] == base_format
    assert info["virtual-size"] == 128 * 1024 * 1024


def test_a_rebuilt_image_does_not_change_a_machine_made_before(tmp_path: Path) -> None:
    base = tmp_path / "built.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    overlay = disks.create_overlay(base, tmp_path / "o.qcow2")
    before = base.stat().st_ino
    # A build puts a new image in place by renaming it over the old one.
    new = tmp_path / ".built.qcow2.partial"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(new), "32M"], check=True)
    new.rename(base)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", "--backing-chain", str(overlay)],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert Path(info[1]["filename"]).stat().st_ino == before
    assert info[1]["virtual-size"] == 64 * 1024 * 1024


def test_overlay_of_missing_image(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="does not exist"):
        disks.create_overlay(tmp_path / "nope.qcow2", tmp_path / "o.qcow2")
