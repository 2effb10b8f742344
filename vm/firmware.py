"""UEFI firmware for each arch: the read-only code image and the variable store template."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.arch import Arch
from vm.errors import VmError

APT_PACKAGE = {"x86_64": "ovmf", "aarch64": "qemu-efi-aarch64"}


@dataclass(frozen=True)
class Firmware:
    code: Path
    vars_template: Path


def find_firmware(arch: Arch, exists: Callable[[Path], bool] = Path.is_file) -> Firmware:
    """The first candidate pair where both files exist.

    Code and vars are paired by position: a 4M code image only works with the 4M vars store.
    """
    for code, nvars in zip(arch.firmware_code, arch.firmware_vars, strict=False):
        if exists(Path(code)) and exists(Path(nvars)):
            return Firmware(Path(code), Path(nvars))
    looked = ", ".join([*arch.firmware_code, *arch.firmware_vars])
    package = APT_PACKAGE.get(arch.name, "the UEFI firmware package")
    raise VmError(
        f"UEFI firmware for {arch.name} not found: looked for {looked}; "
        f"install it with `apt-get install {package}`"
    )
