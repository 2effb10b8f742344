"""A guest for unit tests of the command helpers and the health gate: its commands are
answered by a function, not run anywhere."""

from collections.abc import Callable
from pathlib import Path

from vm.commands import GuestCommands
from vm.ssh import CommandResult

# command -> (exit code, stdout) or (exit code, stdout, stderr); it may raise instead.
Answer = Callable[[str], tuple[int, str] | tuple[int, str, str]]


class FakeGuest(GuestCommands):
    name = "cos-test-fake"

    def __init__(self, answer: Answer, running: bool = True):
        self.answer = answer
        self.running = running
        self.commands: list[str] = []
        self.files: dict[str, bytes] = {}
        self.supervised = 0

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        self.commands.append(command)
        rc, stdout, *stderr = self.answer(command)
        return CommandResult(command, rc, stdout, stderr[0] if stderr else "")

    def _upload(self, local: Path, remote: str) -> None:
        self.files[remote] = local.read_bytes()

    def _download(self, remote: str, local: Path) -> None:
        local.write_bytes(self.files[remote])

    def supervise(self) -> bool:
        self.supervised += 1
        return self.running
