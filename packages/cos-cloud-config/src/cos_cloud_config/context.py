"""What an action acts on: a root (the running system, or a target being installed or
upgraded, or a temporary folder in tests) and where its messages go."""

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


class StepError(Exception):
    """An action could not do what its step asked; the message says what and why."""


@dataclass
class Context:
    root: Path = Path("/")
    stage: str = ""
    dry_run: bool = False
    env: dict = field(default_factory=dict)  # extra environment for commands (INSTANCE_ID)
    warnings: list = field(default_factory=list)
    step: dict = field(default_factory=dict)  # the step being applied (its other fields)

    @property
    def live(self) -> bool:
        """Acting on the running system: the kernel, systemd and sshd are ours to poke."""
        return self.root == Path("/")

    def path(self, path: str | os.PathLike) -> Path:
        """`path` as seen from the root."""
        return self.root / str(path).lstrip("/")

    def run(self, argv: list[str], what: str, input: str | None = None, inside=True) -> str:
        """Run argv inside the root (chroot when it is not /; inside=False for a host tool
        given the root as an option); StepError with the exit status and the tail of the
        output when it fails."""
        if inside and not self.live:
            argv = ["chroot", str(self.root), *argv]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **self.env},
        )
        if result.returncode != 0:
            raise StepError(f"{what}: exit status {result.returncode}: {tail(result)}")
        return result.stdout

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def tail(result: subprocess.CompletedProcess, limit: int = 400) -> str:
    output = ((result.stderr or "") + (result.stdout or "")).strip()
    return ("..." + output[-limit:]) if len(output) > limit else (output or "no output")


def each(entries, apply, label=None) -> None:
    """apply() to every entry, even after one failed: the failures are reported together,
    each after its label."""
    problems = []
    for entry in entries:
        try:
            apply(entry)
        except (StepError, OSError) as exc:
            problems.append(f"{label(entry)}: {exc}" if label else str(exc))
    if problems:
        raise StepError("; ".join(problems))


def write_text_if_changed(path: Path, text: str, mode: int | None = None) -> bool:
    return write_if_changed(path, text.encode(), mode)


def write_if_changed(path: Path, data: bytes, mode: int | None = None) -> bool:
    """Write only when the content differs (a second run changes nothing); atomically.
    Without a mode, the file keeps the one it had."""
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.cos-new")
    temporary.write_bytes(data)
    if mode is not None:
        temporary.chmod(mode)
    elif path.exists():
        temporary.chmod(path.stat().st_mode & 0o7777)
    os.replace(temporary, path)
    return True
