"""What the agent's long verbs (install, upgrade, reset) print: one line per stage with
the time since the start, a step's own duration, and on a terminal the bytes pulled."""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

MiB = 1 << 20


class Progress:
    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        start = "\r" if self.tty else ""  # past a byte counter's line
        self.stream.write(f"{start}[{time.monotonic() - self.started:6.1f} s] {message}\n")
        self.stream.flush()

    stage = say

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        began = time.monotonic()
        self.say(f"{message} ...")
        yield
        self.say(f"{message}: done in {time.monotonic() - began:.1f} s")

    def counted(self, chunks: Iterator[bytes], what: str, total: int) -> Iterator[bytes]:
        done = 0
        for chunk in chunks:
            done += len(chunk)
            if self.tty:
                self.stream.write(f"\r  {what}: {done / MiB:7.1f} / {total / MiB:.1f} MiB")
                self.stream.flush()
            yield chunk
        if self.tty:
            self.stream.write("\n")
