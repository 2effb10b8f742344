"""The cOS partitions, found by label, and mounting them where the agent needs them."""

import fcntl
from contextlib import contextmanager
from pathlib import Path

from cos.errors import CosError
from cos.runner import probe, run

LABELS = ("COS_GRUB", "COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT")
LOCK = Path("/run/lock/cos-partitions.lock")
_held = 0  # this process's nesting depth inside one_agent_at_a_time


def device(label: str) -> str | None:
    return probe(["blkid", "-L", label]).strip() or None


def mountpoint_of(dev: str) -> str | None:
    lines = probe(["findmnt", "-n", "-o", "TARGET", "--source", dev]).split()
    return lines[0] if lines else None


@contextmanager
def one_agent_at_a_time():
    """Two agents share the mount points under /run/cos/mnt: while one holds a partition
    mounted read-only, the other's read-write mount of it comes up read-only too (the
    kernel reuses the mounted file system), and its write fails. Reentrant, so one agent
    can hold two partitions (a second flock on a new descriptor would wait for itself)."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held = 1
        try:
            yield
        finally:
            _held = 0


@contextmanager
def mounted(label: str, writable: bool = False):
    """Yield a path where the partition is mounted, mounting it under /run/cos if needed."""
    with one_agent_at_a_time():
        yield from _mounted(label, writable)


def _mounted(label: str, writable: bool):
    dev = device(label)
    if dev is None:
        raise CosError(f"no partition labelled {label}")
    current = mountpoint_of(dev)
    if current and not writable:
        yield Path(current)
        return
    target = Path("/run/cos/mnt") / label.lower()
    target.mkdir(parents=True, exist_ok=True)
    if current:
        run(["mount", "-o", "remount,rw", current], what=f"remounting {label} read-write")
        try:
            yield Path(current)
        finally:
            # Read-only again also flushes ext4's journal to its place (GRUB reads the file
            # system without replaying the journal).
            run(["mount", "-o", "remount,ro", current], what=f"remounting {label} read-only")
        return
    mode = "rw" if writable else "ro"
    run(["mount", "-o", mode, dev, str(target)], what=f"mounting {label} ({dev})")
    try:
        yield target
    finally:
        run(["umount", str(target)], what=f"unmounting {label}")
