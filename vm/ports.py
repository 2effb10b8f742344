"""Free 127.0.0.1 ports, safe across pytest-xdist workers and concurrent runs.

A port is ours while we hold an flock on <lock_dir>/<port>.lock (the kernel drops the lock
when the process dies, so a crashed run leaks nothing) and nobody else has it bound (the
bind probe catches QEMU processes that already forward it, e.g. `invoke vm.up` machines).
"""

import contextlib
import fcntl
import os
import random
import socket
from pathlib import Path

from toolkit import paths
from vm.errors import VmError

# Below Linux's default ephemeral range (32768-60999), so outgoing connections never take
# a port between our probe and QEMU's bind.
PORT_RANGE = (20000, 32000)


def port_lock_dir() -> Path:
    return paths.build_dir() / "vm" / "ports"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortLease:
    """A port reserved for this process until release()."""

    def __init__(self, port: int, lock_path: Path, fd: int):
        self.port = port
        self._lock_path = lock_path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink first, then unlock: a waiter that opened the old inode re-checks it.
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        os.close(self._fd)
        self._fd = None

    def __repr__(self) -> str:
        return f"PortLease({self.port})"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The holder may have unlinked the file between our open and flock.
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise OSError("lock file replaced")
    except OSError:
        os.close(fd)
        return None
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def allocate_port(
    lock_dir: Path | None = None, port_range: tuple[int, int] = PORT_RANGE
) -> PortLease:
    folder = lock_dir or port_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    low, high = port_range
    candidates = list(range(low, high))
    random.shuffle(candidates)  # parallel workers start far apart
    for port in candidates[:2000]:
        if not port_is_free(port):
            continue
        path = folder / f"{port}.lock"
        fd = _try_lock(path)
        if fd is None:
            continue
        if not port_is_free(port):  # bound between the probe and the lock
            PortLease(port, path, fd).release()
            continue
        return PortLease(port, path, fd)
    raise VmError(f"no free 127.0.0.1 port in {low}-{high} (locks in {folder})")


def remove_stale_locks(lock_dir: Path | None = None) -> list[int]:
    """Delete lock files nobody holds (left by a killed run); returns their ports."""
    folder = lock_dir or port_lock_dir()
    removed = []
    for path in folder.glob("*.lock") if folder.is_dir() else []:
        fd = _try_lock(path)
        if fd is not None:
            PortLease(int(path.stem), path, fd).release()
            removed.append(int(path.stem))
    return removed
