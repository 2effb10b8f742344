"""Firmware lookup: code and variables come in pairs; a missing pair names its package."""

import pytest

from toolkit.arch import get_arch
from vm.errors import VmError
from vm.firmware import find_firmware


def test_firmware_pairs_code_and_vars() -> None:
    arch = get_arch("x86_64")
    present = {arch.firmware_code[1], arch.firmware_vars[1]}  # only the 2M pair
    fw = find_firmware(arch, exists=lambda p: str(p) in present)
    assert (str(fw.code), str(fw.vars_template)) == (arch.firmware_code[1], arch.firmware_vars[1])
    # A 4M code image without its 4M vars is not mixed with the 2M vars.
    lonely = {arch.firmware_code[0], arch.firmware_vars[1]}
    with pytest.raises(VmError):
        find_firmware(arch, exists=lambda p: str(p) in lonely)


@pytest.mark.parametrize(("arch", "package"), [("x86_64", "ovmf"), ("aarch64", "qemu-efi-aarch64")])
def test_missing_firmware_names_paths_and_package(arch: str, package: str) -> None:
    with pytest.raises(VmError) as err:
        find_firmware(get_arch(arch), exists=lambda _p: False)
    message = str(err.value)
    assert get_arch(arch).firmware_code[0] in message and get_arch(arch).firmware_vars[0] in message
    assert f"apt-get install {package}" in message
