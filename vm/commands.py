"""Guest command helpers, written once against an abstract `run`, as the NixOS test driver
does: succeed, fail, execute, systemctl, the waits (wait_until_succeeds, wait_until_fails,
wait_for_unit, wait_for_file, wait_for_open_port), nested steps, copy_to and copy_from.

What the guest does wrong raises a ScenarioFailed (an AssertionError: CommandFailed,
UnitFailed, WaitTimedOut); what keeps the harness from asking raises a VmError.
Every wait is logged as a nested step (vm/steps.py).

A transport (Machine: SSH) provides `run`, the two file transfers and, when it has a
domain to look after, `supervise`. Timeouts are in KVM seconds and scaled by `scale`
(4 under TCG, 8 for an emulated foreign arch), so tests state one number for all hosts.
"""

import contextlib
import shlex
import time
from abc import ABC, abstractmethod
from pathlib import Path

from vm.errors import CommandFailed, GuestUnreachable, UnitFailed, WaitTimedOut
from vm.ssh import CommandResult
from vm.steps import step

# Base timeouts in seconds under KVM (see the module docstring).
COMMAND_TIMEOUT = 120.0
UNIT_TIMEOUT = 60.0


class GuestCommands(ABC):
    name: str
    scale: float = 1.0

    @abstractmethod
    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run `command` as root within `timeout` KVM seconds (default COMMAND_TIMEOUT).
        Raises CommandFailed (rc -1) when it did not finish in time and GuestUnreachable
        when the guest cannot be reached."""

    @abstractmethod
    def _upload(self, local: Path, remote: str) -> None:
        """Copy a local file or folder tree to the guest, modes included."""

    @abstractmethod
    def _download(self, remote: str, local: Path) -> None:
        """Copy a guest file or folder tree to the host."""

    def supervise(self) -> bool:
        """One step of looking after the guest while a wait goes on; returns whether it
        runs. A transport without a machine to restart has nothing to do."""
        return True

    def scaled(self, seconds: float) -> float:
        return seconds * self.scale

    def execute(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        result = self.run(command, timeout)
        return result.rc, result.stdout

    def succeed(self, command: str, timeout: float | None = None) -> str:
        result = self.run(command, timeout)
        if result.rc != 0:
            raise CommandFailed(
                f"{self.name}: command {command!r} failed with exit code {result.rc}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
                command,
                result.rc,
                result.stdout,
                result.stderr,
            )
        return result.stdout

    def fail(self, command: str, timeout: float | None = None) -> str:
        """Run a command that must fail; returns its stdout and stderr."""
        result = self.run(command, timeout)
        if result.rc == 0:
            raise CommandFailed(
                f"{self.name}: command {command!r} succeeded but was expected to fail\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
                command,
                result.rc,
                result.stdout,
                result.stderr,
            )
        return result.stdout + result.stderr

    def systemctl(self, arguments: str, timeout: float | None = None) -> tuple[int, str]:
        """`systemctl ARGUMENTS` (given as shell words); returns its exit code and stdout."""
        return self.execute(f"systemctl {arguments}", timeout)

    def nested(self, title: str) -> contextlib.AbstractContextManager[None]:
        """A step of a scenario, logged with its duration and the steps inside it."""
        return step(f"{self.name}: {title}")

    def _retry(
        self, command: str, want_success: bool, timeout: float | None, interval: float
    ) -> CommandResult:
        """Run `command` until its exit code is (or, without `want_success`, is not) 0."""
        limit = self.scaled(timeout or COMMAND_TIMEOUT)
        deadline = time.monotonic() + limit
        last = None
        while True:
            try:
                last = self.run(
                    command, timeout=max(1.0, (deadline - time.monotonic()) / self.scale)
                )
                if (last.rc == 0) == want_success:
                    return last
            except GuestUnreachable:
                if not self.supervise():
                    raise  # stopped for good: waiting longer cannot help
            except CommandFailed:
                pass  # the attempt timed out; the overall deadline decides
            if time.monotonic() > deadline:
                out = (
                    f"exit code {last.rc}\nstdout:\n{last.stdout}\nstderr:\n{last.stderr}"
                    if last
                    else "no attempt finished"
                )
                raise CommandFailed(
                    f"{self.name}: {command!r} did not {'succeed' if want_success else 'fail'}"
                    f" within {limit:.0f} s; last try: {out}",
                    command,
                    last.rc if last else -1,
                    last.stdout if last else "",
                    last.stderr if last else "",
                )
            time.sleep(interval)

    def wait_until_succeeds(
        self, command: str, timeout: float | None = None, interval: float = 1.0
    ) -> str:
        """Run `command` until it exits 0; returns its stdout."""
        with self.nested(f"waiting for success: {command}"):
            return self._retry(command, True, timeout, interval).stdout

    def wait_until_fails(
        self, command: str, timeout: float | None = None, interval: float = 1.0
    ) -> str:
        """Run `command` until it exits non-zero; returns its stdout and stderr."""
        with self.nested(f"waiting for failure: {command}"):
            result = self._retry(command, False, timeout, interval)
            return result.stdout + result.stderr

    def wait_for_file(self, path: str, timeout: float | None = None) -> None:
        """Wait until `path` exists in the guest."""
        with self.nested(f"waiting for file {path}"):
            self._wait_for(f"test -e {shlex.quote(path)}", f"file {path} did not appear", timeout)

    def wait_for_open_port(self, port: int, timeout: float | None = None) -> None:
        """Wait until a process in the guest listens on TCP `port` (any address)."""
        with self.nested(f"waiting for TCP port {port}"):
            probe = f"ss -Htln 'sport = :{int(port)}' | grep -q ."
            self._wait_for(probe, f"nothing listens on TCP port {port}", timeout)

    def _wait_for(self, probe: str, what: str, timeout: float | None) -> None:
        try:
            self._retry(probe, True, timeout, 1.0)
        except CommandFailed as exc:
            limit = self.scaled(timeout or COMMAND_TIMEOUT)
            raise WaitTimedOut(f"{self.name}: {what} within {limit:.0f} s") from exc

    def wait_for_unit(self, unit: str, timeout: float | None = None) -> None:
        """Wait until `unit` is active; fail at once when it has failed."""
        with self.nested(f"waiting for unit {unit}"):
            self._wait_for_unit(unit, timeout)

    def _wait_for_unit(self, unit: str, timeout: float | None) -> None:
        limit = self.scaled(timeout or UNIT_TIMEOUT)
        deadline = time.monotonic() + limit
        quoted = shlex.quote(unit)
        state: dict[str, str] = {}
        while True:
            out = self.systemctl(f"show -p ActiveState -p SubState -p LoadState {quoted}")[1]
            state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            active = state.get("ActiveState", "")
            if active == "active":
                return
            if active == "failed":
                details = self.run(
                    f"systemctl status --no-pager --lines 0 {quoted}; "
                    f"journalctl -b --no-pager -n 40 -u {quoted}"
                ).stdout
                raise UnitFailed(f"{self.name}: unit {unit} failed:\n{details}")
            if time.monotonic() > deadline:
                raise WaitTimedOut(
                    f"{self.name}: unit {unit} not active within {limit:.0f} s "
                    f"(state: {state or 'unknown'})"
                )
            time.sleep(1)

    def copy_to(self, local: str | Path, remote: str) -> None:
        self._upload(Path(local), remote)

    def copy_from(self, remote: str, local: str | Path) -> None:
        self._download(remote, Path(local))
