"""Port allocation: free, distinct, and safe across processes (pytest-xdist workers)."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vm.errors import VmError
from vm.ports import allocate_port, port_is_free, remove_stale_locks


def test_allocates_free_distinct_ports(tmp_path: Path) -> None:
    leases = [allocate_port(tmp_path) for _ in range(5)]
    ports = [lease.port for lease in leases]
    assert len(set(ports)) == 5
    for lease in leases:
        assert 20000 <= lease.port < 32000
        assert (tmp_path / f"{lease.port}.lock").exists()
        assert port_is_free(lease.port)  # reserved, not bound: QEMU binds it
        lease.release()
        assert not (tmp_path / f"{lease.port}.lock").exists()
    leases[0].release()  # twice is harmless


def test_skips_bound_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        bound = sock.getsockname()[1]
        assert not port_is_free(bound)
        with pytest.raises(VmError, match="no free 127.0.0.1 port"):
            allocate_port(tmp_path, (bound, bound + 1))


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_skips_port_locked_by_another_process(tmp_path: Path) -> None:
    lease = allocate_port(tmp_path)
    port = lease.port
    lease.release()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / f"{port}.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(VmError):
            allocate_port(tmp_path, (port, port + 1))
        assert remove_stale_locks(tmp_path) == []  # held: not stale
    finally:
        holder.kill()
        holder.wait()
    # The holder died: its lock is gone with it, the file is stale.
    assert remove_stale_locks(tmp_path) == [port]
    again = allocate_port(tmp_path, (port, port + 1))
    assert again.port == port
    again.release()


# Each grabber is a fresh interpreter, as an xdist worker is: a forked pool would
# inherit this process's signal handlers and locks, and can hang on teardown.
_GRAB = """
import sys, time
from pathlib import Path
from vm.ports import allocate_port
low = int(sys.argv[2])
lease = allocate_port(Path(sys.argv[1]), (low, low + 8))
print(lease.port, flush=True)
time.sleep(0.5)  # hold it while the others allocate, as a worker does until QEMU binds
"""


def test_parallel_processes_get_distinct_ports(tmp_path: Path) -> None:
    lease = allocate_port(tmp_path)  # find a free area for the small range
    low = lease.port
    lease.release()
    grabbers = [
        subprocess.Popen(
            [sys.executable, "-c", _GRAB, str(tmp_path), str(low)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    ports = [int(g.communicate(timeout=60)[0]) for g in grabbers]
    assert all(g.returncode == 0 for g in grabbers)
    assert len(set(ports)) == 6
