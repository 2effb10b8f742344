"""Harness failures and scenario failures, kept apart so a report says at once what broke.

VmError: the harness broke (libvirt, firmware, ports, images, a guest it cannot reach).
ScenarioFailed: the system under test broke a promise (a command failed, a unit failed, a
wait timed out, the health gate found a broken boot). ScenarioFailed is an AssertionError,
as a failed `assert` in the test is, and never a VmError. Both are CosErrors so the CLI
and pytest show the message as is.
"""

from toolkit.errors import CosError


class VmError(CosError):
    """A harness failure: libvirt, firmware, ports, image, an unreachable guest."""


class LibvirtUnavailable(VmError):
    """libvirtd cannot be reached."""


class ImageNotBuilt(VmError):
    """The flavor/arch image the test asks for is not in the build folder."""


class GuestUnreachable(VmError):
    """The guest never answered SSH (or stopped) within the timeout."""


class ScenarioFailed(AssertionError, CosError):
    """The system under test failed: not the harness."""


class HealthGateFailed(ScenarioFailed):
    """The boot reached SSH but the console or systemd shows a broken system."""


class WaitTimedOut(ScenarioFailed):
    """What a wait looked for did not happen within its timeout."""


class UnitFailed(ScenarioFailed):
    """A systemd unit a scenario waits for has failed."""


class CommandFailed(ScenarioFailed):
    """A guest command exited non-zero (or succeeded where failure was expected), or did
    not finish in time (rc -1)."""

    def __init__(self, message: str, command: str, rc: int, stdout: str, stderr: str):
        super().__init__(message)
        self.command = command
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


def failure_kind(exc: BaseException) -> str:
    """ "scenario" when the system under test failed, "harness" when the harness did."""
    return "scenario" if isinstance(exc, AssertionError) else "harness"
