"""The serial console log: reading it from byte offsets, waiting for patterns, and
timestamping boot phases as they appear."""

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vm.errors import VmError, WaitTimedOut
from vm.health import FIRMWARE_BOOT_MANAGER

POLL_SECONDS = 0.2
# Terminal control sequences (GRUB and the UEFI shell draw with them).
_ANSI = re.compile(r"\x1b(\[[0-9;?=]*[A-Za-z]|[()][A-Za-z0-9]|[=>78cDEHMZ])")

# Boot phases, each timed at its first match after the boot began. Early phases (up to
# the kernel) may be missing: a quiet kernel or a hidden GRUB menu prints nothing. Later
# phases are searched after the last early phase found; on a reboot (`gated`) only once
# one was found, because the old system's shutdown also prints "Reached target".
EARLY_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("firmware", FIRMWARE_BOOT_MANAGER),
    ("grub", re.compile(r"GNU GRUB|Welcome to GRUB|grub>|cOS: booting")),
    ("kernel", re.compile(r"Linux version \d")),
)
LATE_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("systemd", re.compile(r"Welcome to (?!GRUB)")),
    ("first_target", re.compile(r"Reached target")),
    ("multi_user", re.compile(r"Reached target.*Multi-User")),
)
BOOT_PHASES = tuple(name for name, _ in (*EARLY_MARKERS, *LATE_MARKERS))


def clean(text: str) -> str:
    return _ANSI.sub("", text).replace("\r", "")


class ConsoleLog:
    def __init__(self, path: Path):
        self.path = path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self, since: int = 0) -> str:
        """Text from byte offset `since`, without terminal control sequences."""
        try:
            with self.path.open("rb") as f:
                f.seek(since)
                data = f.read()
        except OSError:
            return ""
        return clean(data.decode("utf-8", errors="replace"))

    def lines(self, since: int = 0) -> list[str]:
        return [line for line in self.read(since).split("\n") if line.strip()]

    def tail(self, count: int = 30, since: int = 0) -> str:
        lines = self.lines(since)[-count:]
        return "\n".join(lines) if lines else "(console is empty)"

    def search(self, pattern: str | re.Pattern[str], since: int = 0) -> re.Match[str] | None:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return regex.search(self.read(since))

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        since: int = 0,
        still_running: Callable[[], bool] | None = None,
    ) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = self.search(regex, since)
            if match:
                return match
            if still_running is not None and not still_running():
                raise VmError(
                    f"machine stopped before the console showed {regex.pattern!r}; "
                    f"last console lines:\n{self.tail(30, since)}"
                )
            if time.monotonic() >= deadline:
                raise WaitTimedOut(
                    f"console did not show {regex.pattern!r} within {timeout:.0f} s; "
                    f"last console lines:\n{self.tail(30, since)}"
                )
            time.sleep(POLL_SECONDS)


class BootTimer(threading.Thread):
    """Polls the console every 0.2 s and records when each boot marker first appears,
    in seconds since `started` (a time.monotonic() value)."""

    def __init__(self, console: ConsoleLog, since: int, started: float, gated: bool = False):
        super().__init__(daemon=True, name="boot-timer")
        self.console = console
        self.since = since
        self.started = started
        self.gated = gated  # a reboot: wait for the new boot's first early marker
        self.timings: dict[str, float] = {}
        self._positions: dict[str, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            if len(self.timings) == len(BOOT_PHASES):
                return
            self._stop_event.wait(POLL_SECONDS)

    def poll(self) -> None:
        text = self.console.read(self.since)
        now = round(time.monotonic() - self.started, 2)
        for phase, regex in EARLY_MARKERS:
            if phase not in self._positions:
                match = regex.search(text)
                if match:
                    self.timings[phase] = now
                    self._positions[phase] = match.end()
        if self.gated and not self._positions:
            return
        start = max(self._positions.values(), default=0)
        for phase, regex in LATE_MARKERS:
            if phase not in self.timings:
                match = regex.search(text, start)
                if match:
                    self.timings[phase] = now

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=2)
        self.poll()  # markers that appeared since the last tick
        return dict(self.timings)
