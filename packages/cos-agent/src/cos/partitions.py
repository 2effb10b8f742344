"""The cOS partitions, found by label, and mounting them where the agent needs them."""

import fcntl
import subprocess
from contextlib import contextmanager
from pathlib import Path

LABELS = ("COS_GRUB", "COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT")
LOCK = Path("/run/lock/cos-partitions.lock")


def device(label: str) -> str | None:
    result = subprocess.run(["blkid", "-L", label], capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


def mountpoint_of(dev: str) -> str | None:
    result = subprocess.run(
        ["findmnt", "-n", "-o", "TARGET", "--source", dev],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.split()
    return lines[0] if lines else None


@contextmanager
def one_agent_at_a_time():
    """Two agents share the mount points under /run/cos/mnt: while one holds a partition
    mounted read-only, the other's read-write mount of it comes up read-only too (the
    kernel reuses the mounted file system), and its write fails."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def mounted(label: str, writable: bool = False):
    """Yield a path where the partition is mounted, mounting it under /run/cos if needed."""
    with one_agent_at_a_time():
        yield from _mounted(label, writable)


def _mounted(label: str, writable: bool):
    dev = device(label)
    if dev is None:
        raise FileNotFoundError(f"no partition labelled {label}")
    current = mountpoint_of(dev)
    if current and not writable:
        yield Path(current)
        return
    target = Path("/run/cos/mnt") / label.lower()
    target.mkdir(parents=True, exist_ok=True)
    if current:
        subprocess.run(["mount", "-o", "remount,rw", current], check=True)
        try:
            yield Path(current)
        finally:
            subprocess.run(["mount", "-o", "remount,ro", current], check=False)
        return
    subprocess.run(["mount", "-o", "rw" if writable else "ro", dev, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)
