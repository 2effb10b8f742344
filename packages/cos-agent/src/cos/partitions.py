"""The cOS partitions, found by label, and mounting them where the agent needs them."""

import subprocess
from contextlib import contextmanager
from pathlib import Path

LABELS = ("COS_GRUB", "COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT")


def device(label: str) -> str | None:
    result = subprocess.run(["blkid", "-L", label], capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


def mountpoint_of(dev: str) -> str | None:
    result = subprocess.run(["findmnt", "-n", "-o", "TARGET", "--source", dev],
                            capture_output=True, text=True, check=False)
    lines = result.stdout.split()
    return lines[0] if lines else None


@contextmanager
def mounted(label: str, writable: bool = False):
    """Yield a path where the partition is mounted, mounting it under /run/cos if needed."""
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
