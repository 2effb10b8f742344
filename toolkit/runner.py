"""Running build tools: their output streamed as progress, their failure made readable."""

import os
import subprocess
from collections import deque

from toolkit.errors import CosError


def run(
    command: list[str],
    *,
    what: str,
    log=print,
    progress: bool = False,
    env: dict | None = None,
    input: bytes | None = None,
) -> str:
    """Run `command`; on failure raise CosError with `what` and the tail of its output."""
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            env=env,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise CosError(f"{what}: tool {command[0]!r} not found; run `invoke setup`") from None
    if input is not None:
        proc.stdin.write(input.decode())
        proc.stdin.close()
    tail: deque[str] = deque(maxlen=40)
    lines = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        lines.append(line)
        if progress:
            log(f"  {line}")
    if proc.wait() != 0:
        shown = "\n".join(f"  | {line}" for line in tail)
        raise CosError(f"{what} failed (exit {proc.returncode}); last output:\n{shown}")
    return "\n".join(lines)


def system_env() -> dict[str, str]:
    """The environment with the system's PATH, for system tools: a user's PATH may put
    shims (pyenv, ...) before /usr/bin, and mmdebstrap's helpers find `python3` by PATH."""
    return {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
