"""What a failed test leaves behind for a human: console log, journal, `cos status`,
domain XML. Every step tolerates failure (the guest may be dead): the error is written in
place of the output."""

import re
import shutil
from pathlib import Path
from typing import Protocol


class Inspectable(Protocol):
    name: str

    @property
    def console_path(self) -> Path: ...

    def domain_xml(self) -> str: ...

    def execute(self, command: str, timeout: float | None = None) -> tuple[int, str]: ...

    def is_running(self) -> bool: ...


GUEST_COMMANDS = {
    "journal.txt": "journalctl -b --no-pager",
    "cos-status.txt": "cos status",
    "failed-units.txt": "systemctl --failed --no-pager",
}


def safe_name(text: str) -> str:
    """A folder name from a pytest node id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:150] or "test"


def collect(machine: Inspectable, dest: Path, command_timeout: float = 60) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    written = []

    def write(name: str, text: str) -> None:
        path = dest / name
        path.write_text(text)
        written.append(path)

    if machine.console_path.is_file():
        shutil.copyfile(machine.console_path, dest / "console.log")
        written.append(dest / "console.log")
    else:
        write("console.log", f"(no console log at {machine.console_path})\n")
    try:
        write("domain.xml", machine.domain_xml())
    except Exception as exc:  # noqa: BLE001 - an artifact must never hide the test's failure
        write("domain.xml", f"(domain XML unavailable: {exc})\n")
    running = _safe(machine.is_running)
    for name, command in GUEST_COMMANDS.items():
        if not running:
            write(name, "(machine is not running)\n")
            continue
        try:
            rc, out = machine.execute(command, timeout=command_timeout)
            write(name, out if rc == 0 else f"{out}\n(`{command}` exited {rc})\n")
        except Exception as exc:  # noqa: BLE001
            write(name, f"(`{command}` failed: {exc})\n")
    return written


def _safe(check) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(check())
    except Exception:  # noqa: BLE001
        return False
