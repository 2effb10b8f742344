"""Nested step logging, as the NixOS test driver's `nested`: each step (a wait, a boot, a
restore, or one a scenario names) is logged when it starts and when it ends, with its
duration, indented by its depth. The lines go to the `cos.vm` logger, which pytest
captures and shows with a failed test."""

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("cos.vm")
_depth = threading.local()


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    depth = getattr(_depth, "value", 0)
    indent = "  " * depth
    log.info("%s%s", indent, title)
    started = time.monotonic()
    _depth.value = depth + 1
    try:
        yield
    except BaseException as exc:
        took = time.monotonic() - started
        log.info("%s%s: failed after %.1f s (%s)", indent, title, took, type(exc).__name__)
        raise
    finally:
        _depth.value = depth
    log.info("%s%s: done in %.1f s", indent, title, time.monotonic() - started)
