"""Domain XML for both arches: valid per libvirt's schema and saying what the harness needs."""

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from toolkit.arch import ARCHES, get_arch
from vm.domain import (
    METADATA_NS,
    QEMU_NS,
    DiskSpec,
    DomainSpec,
    domain_xml,
    netdev_args,
    parse_metadata,
)
from vm.firmware import Firmware
from vm.testrun import Owner

OWNER = Owner("1234-abcdef", 1234, 5678, keep=False)


def spec(tmp_path: Path, arch: str, accel: str = "tcg", iso: bool = True, **kw) -> DomainSpec:
    a = get_arch(arch)
    disks = [
        DiskSpec(tmp_path / "disk.qcow2", "qcow2", "vda", boot_order=1),
        DiskSpec(tmp_path / "data.qcow2", "qcow2", "vdb"),
        DiskSpec(tmp_path / "seed.iso", "raw", "vdc", readonly=True),
    ]
    if iso:
        disks.append(DiskSpec(tmp_path / "inst.iso", "raw", "sda", "cdrom", True, boot_order=2))
    return DomainSpec(
        name="cos-test-unit-0001", arch=a, accel=accel,
        firmware=Firmware(Path(a.firmware_code[0]), Path(a.firmware_vars[0])),
        nvram=tmp_path / "efivars.fd", console_log=tmp_path / "console.log", ssh_port=24022,
        owner=OWNER, workdir=tmp_path, disks=disks, registry_port=25000, **kw,
    )  # fmt: skip


def validate(tmp_path: Path, xml: str) -> None:
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate is not installed (apt-get install libvirt-clients)")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    proc = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


@pytest.mark.parametrize("arch", sorted(ARCHES))
@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_domain_xml_validates(tmp_path: Path, arch: str, accel: str) -> None:
    validate(tmp_path, domain_xml(spec(tmp_path, arch, accel)))


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_domain_xml_without_iso_validates(tmp_path: Path, arch: str) -> None:
    xml = domain_xml(spec(tmp_path, arch, iso=False))
    validate(tmp_path, xml)
    assert "virtio-scsi" not in xml


@pytest.mark.parametrize(
    ("arch", "machine", "cpu", "disabled"),
    [("x86_64", "q35", "qemu64", ["svm"]), ("aarch64", "virt", "cortex-a72", [])],
)
def test_machine_firmware_and_cpu(
    tmp_path: Path, arch: str, machine: str, cpu: str, disabled: list[str]
) -> None:
    root = ET.fromstring(domain_xml(spec(tmp_path, arch)))
    assert root.get("type") == "qemu"  # TCG
    os_type = root.find("os/type")
    assert os_type is not None
    assert (os_type.get("arch"), os_type.get("machine")) == (arch, machine)
    loader = root.find("os/loader")
    assert loader is not None
    assert loader.get("readonly") == "yes" and loader.get("type") == "pflash"
    assert loader.text == get_arch(arch).firmware_code[0]
    assert root.findtext("os/nvram") == str(tmp_path / "efivars.fd")
    assert root.findtext("cpu/model") == cpu
    # no nested virtualization under TCG: the guest would load kvm modules for nothing
    assert [f.get("name") for f in root.iterfind("cpu/feature[@policy='disable']")] == disabled
    assert root.findtext("devices/emulator") == f"/usr/bin/qemu-system-{arch}"


def test_kvm_uses_host_cpu(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(spec(tmp_path, "x86_64", "kvm")))
    assert root.get("type") == "kvm"
    cpu = root.find("cpu")
    assert cpu is not None and cpu.get("mode") == "host-passthrough"


def test_cpu_model_override(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(spec(tmp_path, "x86_64", cpu_model="Nehalem")))
    assert root.findtext("cpu/model") == "Nehalem"


def test_disks_console_and_seclabel(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(spec(tmp_path, "x86_64")))
    disks = {d.find("target").get("dev"): d for d in root.iter("disk")}  # type: ignore[union-attr]
    assert set(disks) == {"vda", "vdb", "vdc", "sda"}
    assert disks["vda"].find("boot").get("order") == "1"  # type: ignore[union-attr]
    assert disks["sda"].get("device") == "cdrom"
    assert disks["sda"].find("boot").get("order") == "2"  # type: ignore[union-attr]
    assert disks["vdc"].find("readonly") is not None
    assert disks["vda"].find("source").get("file") == str(tmp_path / "disk.qcow2")  # type: ignore[union-attr]
    assert disks["vda"].find("target").get("bus") == "virtio"  # type: ignore[union-attr]
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == str(tmp_path / "console.log")  # type: ignore[union-attr]
    label = root.find("seclabel")
    assert label is not None
    assert (label.get("type"), label.get("model"), label.get("relabel")) == ("static", "dac", "no")
    assert label.findtext("label") == f"+{os.getuid()}:+{os.getgid()}"


def test_network_passthrough(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(spec(tmp_path, "aarch64")))
    args = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    assert args[0] == "-netdev"
    assert "restrict=on" in args[1]
    assert "hostfwd=tcp:127.0.0.1:24022-:22" in args[1]
    assert "guestfwd=tcp:10.0.2.100:5000-cmd:nc 127.0.0.1 25000" in args[1]
    assert args[2] == "-device" and "romfile=," in args[3] + ","
    assert root.find("devices/interface") is None  # libvirt must not add its own NIC


def test_netdev_without_registry() -> None:
    netdev = netdev_args(22022, None)[1]
    assert "guestfwd" not in netdev and "hostfwd=tcp:127.0.0.1:22022-:22" in netdev


def test_metadata_round_trip(tmp_path: Path) -> None:
    xml = domain_xml(spec(tmp_path, "x86_64"))
    root = ET.fromstring(xml)
    tag = root.find(f"metadata/{{{METADATA_NS}}}owner")
    assert tag is not None and tag.get("pid") == "1234"
    assert parse_metadata(xml) == (OWNER, tmp_path)
    assert parse_metadata(ET.tostring(tag, encoding="unicode")) == (OWNER, tmp_path)
    # What virDomainGetMetadata really returns: the element alone, namespace dropped.
    bare = f'<owner run="1234-abcdef" pid="1234" pidstart="5678" keep="no" dir="{tmp_path}"/>'
    assert parse_metadata(bare) == (OWNER, tmp_path)
    assert parse_metadata("<domain/>") is None
    assert parse_metadata("not xml") is None


def test_uuid_is_the_machines_own(tmp_path: Path) -> None:
    """systemd takes the machine ID from the SMBIOS UUID: every start of one machine (a
    cold reboot creates the transient domain again) must present the same one."""
    fixed = spec(tmp_path, "x86_64", uuid="6f2c1d9e-3b4a-4c5d-8e7f-0a1b2c3d4e5f")
    assert ET.fromstring(domain_xml(fixed)).findtext("uuid") == fixed.uuid
    assert spec(tmp_path, "x86_64").uuid != spec(tmp_path, "x86_64").uuid
