"""A test run: this process's identity as a harness run, and what it must clean up at exit.

A run owns a folder build_dir()/vm/runs/<run id>/ holding its machines' files, and tags
its domains with the same id and its pid. When the pid is gone (crash, SIGKILL),
vm.cleanup removes both. The pid's start time guards against pid reuse.
"""

import atexit
import contextlib
import json
import os
import secrets
import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit import paths


@dataclass(frozen=True)
class Owner:
    run_id: str
    pid: int
    pid_start: int  # clock ticks since boot, from /proc/<pid>/stat; 0 when unknown
    keep: bool = False  # kept machines (vm.up, --keep-vms) outlive their process on purpose


def process_start_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name may hold spaces; fields after the closing parenthesis are fixed.
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_alive(pid: int, pid_start: int) -> bool:
    if pid <= 0 or not Path(f"/proc/{pid}").exists():
        return False
    return pid_start == 0 or process_start_ticks(pid) == pid_start


def runs_dir() -> Path:
    return paths.build_dir() / "vm" / "runs"


class Run:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.id = f"{self.pid}-{secrets.token_hex(3)}"
        self.pid_start = process_start_ticks(self.pid)
        self.dir = runs_dir() / self.id
        self._cleanups: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()

    def owner(self, keep: bool = False) -> Owner:
        return Owner(self.id, self.pid, self.pid_start, keep)

    def ensure_dir(self) -> Path:
        """Create the run folder with its owner file in one rename, so a concurrent
        cleanup never sees it without an owner."""
        if not self.dir.is_dir():
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.id}-", dir=self.dir.parent))
            (tmp / "owner.json").write_text(
                json.dumps({"pid": self.pid, "pid_start": self.pid_start}) + "\n"
            )
            os.rename(tmp, self.dir)
        return self.dir

    def on_exit(self, key: int, cleanup: Callable[[], None]) -> None:
        with self._lock:
            self._cleanups[key] = cleanup

    def forget(self, key: int) -> None:
        with self._lock:
            self._cleanups.pop(key, None)

    def cleanup(self) -> None:
        with self._lock:
            pending = list(self._cleanups.values())
            self._cleanups.clear()
        for cleanup in pending:
            with contextlib.suppress(Exception):
                cleanup()
        if self.dir.is_dir() and not any(p.name != "owner.json" for p in self.dir.iterdir()):
            with contextlib.suppress(OSError):
                (self.dir / "owner.json").unlink()
                self.dir.rmdir()


_run: Run | None = None


def current_run() -> Run:
    """The run of this process (a forked child gets its own)."""
    global _run
    if _run is None or _run.pid != os.getpid():
        _run = Run()
        atexit.register(_run.cleanup)
        _exit_on_termination()
    return _run


def _exit_on_termination() -> None:
    """SIGTERM/SIGHUP normally kill Python without running atexit; turn them into
    SystemExit so machines are cleaned up. Handlers someone else installed are kept.
    SIGINT already raises KeyboardInterrupt, which runs finalizers and atexit."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_exit)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
