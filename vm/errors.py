"""Harness failures. Each is a CosError so the CLI and pytest show the message as is."""

from toolkit.errors import CosError


class VmError(CosError):
    """A harness failure: libvirt, firmware, image, guest."""


class LibvirtUnavailable(VmError):
    """libvirtd cannot be reached."""


class ImageNotBuilt(VmError):
    """The flavor/arch image the test asks for is not in the build folder."""


class GuestUnreachable(VmError):
    """The guest never answered SSH (or stopped) within the timeout."""


class HealthGateFailed(VmError):
    """The boot reached SSH but the console or systemd shows a broken system."""


class CommandFailed(VmError):
    """A guest command exited non-zero (or succeeded where failure was expected)."""

    def __init__(self, message: str, command: str, rc: int, stdout: str, stderr: str):
        super().__init__(message)
        self.command = command
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
