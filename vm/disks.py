"""Per-machine disks: a qcow2 overlay over a built image (so tests never change it) and
blank disks."""

import json
import os
import shutil
import subprocess
from pathlib import Path

from vm.errors import VmError


def _qemu_img(*args: str) -> str:
    try:
        proc = subprocess.run(
            ["qemu-img", *args], capture_output=True, text=True, timeout=120, check=False
        )
    except FileNotFoundError:
        raise VmError("qemu-img not found: install it with `apt-get install qemu-utils`") from None
    if proc.returncode != 0:
        raise VmError(f"qemu-img {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def image_format(path: Path) -> str:
    """qcow2 or raw, by suffix when it says so, otherwise by asking qemu-img."""
    if path.suffix == ".qcow2":
        return "qcow2"
    if path.suffix in (".raw", ".img", ".iso"):
        return "raw"
    return json.loads(_qemu_img("info", "--output=json", str(path)))["format"]


def create_overlay(base: Path, dest: Path, size: str | None = None) -> Path:
    """A qcow2 overlay backed by `base`; writes land in the overlay only.

    The overlay is backed by a hard link to `base` beside it (a copy across file
    systems): every start of the machine (a reboot is a new QEMU process) opens the
    backing file by name, and a build that replaces `base` meanwhile would otherwise hand
    a running machine another image under its own writes (seen: GRUB found garbage)."""
    if not base.is_file():
        raise VmError(f"backing image {base} does not exist")
    pinned = dest.with_name(f"{dest.stem}.base{base.suffix}")
    pinned.unlink(missing_ok=True)
    try:
        os.link(base.resolve(), pinned)
    except OSError:
        shutil.copyfile(base.resolve(), pinned)
    args = ["create", "-q", "-f", "qcow2", "-F", image_format(base), "-b", str(pinned)]
    _qemu_img(*args, str(dest), *([size] if size else []))
    return dest


def create_overlay_on_saved(saved: Path, dest: Path) -> Path:
    """A qcow2 overlay on a saved state's disk, which stays read-only under it: the saved
    disk lives in its state's folder and only `vm.clean` or a changed image removes it."""
    if not saved.is_file():
        raise VmError(f"saved disk {saved} does not exist")
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(saved), str(dest))
    return dest


def create_blank(dest: Path, size: str) -> Path:
    _qemu_img("create", "-q", "-f", "qcow2", str(dest), size)
    return dest
