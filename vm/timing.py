"""What each machine of this process did, in order: boots (with their phases from the
console), restores from saved states, and states saved. The pytest plugin hands each test
the events that happened while it ran, for the timing summary."""

import threading
from typing import Any

_events: list[dict[str, Any]] = []
_lock = threading.Lock()


def note(kind: str, machine: Any, phases: dict[str, float]) -> None:
    """kind: "boot" (a boot reached SSH), "restore" (a saved state answered SSH), "save"."""
    with _lock:
        _events.append({"kind": kind, "machine": machine.name, "arch": machine.arch.name, **phases})


def mark() -> int:
    with _lock:
        return len(_events)


def since(position: int) -> list[dict[str, Any]]:
    with _lock:
        return [dict(e) for e in _events[position:]]
