"""libvirt domain XML for a test machine, and the metadata tag that marks it as ours."""

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

from toolkit.arch import Arch
from vm.firmware import Firmware
from vm.testrun import Owner

DOMAIN_PREFIX = "cos-test-"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
METADATA_NS = "https://cos-toolkit.invalid/vm/1"  # only has to be unique, never fetched
METADATA_PREFIX = "cos"
REGISTRY_GUEST_ADDR = "10.0.2.100:5000"  # what the guest uses to reach the host's registry

ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace(METADATA_PREFIX, METADATA_NS)

# CPU models under TCG, chosen by measurement (debian-trixie image to SSH, 2 vCPUs, quiet
# 2-core host): x86_64 qemu64 32 s, Nehalem 38 s, Haswell-noTSX 38 s; on a plain Debian
# guest `max` took 43 s against 23 s for qemu64. Fewer CPU features are cheaper to emulate.
# aarch64: cortex-a72 50 s here; `max` took 70 s against 26 s on the plain Debian guest.
TCG_CPU = {"x86_64": "qemu64", "aarch64": "cortex-a72"}
# Nested virtualization is of no use under TCG, and advertising it makes udev load kvm and
# kvm_amd on every boot: 0.9 s of a vCPU, measured by loading them in a booted guest.
TCG_CPU_FEATURES_OFF = {"x86_64": ("svm",), "aarch64": ()}
MACHINE_TYPE = {"x86_64": "q35", "aarch64": "virt"}


@dataclass(frozen=True)
class DiskSpec:
    path: Path
    format: str  # qcow2 or raw
    target: str  # vda, vdb, sda...
    device: str = "disk"  # disk or cdrom
    readonly: bool = False
    boot_order: int | None = None


@dataclass(frozen=True)
class DomainSpec:
    name: str
    arch: Arch
    accel: str  # kvm or tcg
    firmware: Firmware
    nvram: Path
    console_log: Path
    ssh_port: int
    owner: Owner
    workdir: Path
    disks: list[DiskSpec] = field(default_factory=list)
    registry_port: int | None = None
    memory_mib: int = 1024
    vcpus: int = 2
    cpu_model: str | None = None  # None: TCG_CPU for the arch (host-passthrough under KVM)
    # A guest reset ends QEMU and the owner starts the domain again. Under TCG, OVMF
    # took 8-23 s to reach its boot manager after a reset from a running Linux (4.5 s
    # from power-on) and once hung there for good (its AP wake-up wait has no timeout).
    cold_reboots: bool = False
    # The SMBIOS system UUID, fixed for the machine's life: systemd derives the machine ID
    # from it on an image whose /etc starts empty, and libvirt would pick a new one for
    # every start of a transient domain (a cold reboot would make a new machine).
    uuid: str = field(default_factory=lambda: str(uuid4()))
    # The SMBIOS system UUID the guest sees when it is not `uuid`: a machine restored from
    # a saved state runs as its own domain (libvirt wants one UUID per domain) but keeps
    # the template's identity, so its machine ID survives a cold reboot.
    smbios_uuid: str | None = None
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def netdev_args(ssh_port: int, registry_port: int | None) -> list[str]:
    """User-mode networking, restricted: the guest reaches only the two forwards.

    guestfwd's `cmd:` form runs one `nc` per guest connection; the `tcp:` form would
    connect once and serve a single connection.
    """
    netdev = f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    if registry_port:
        netdev += f",guestfwd=tcp:{REGISTRY_GUEST_ADDR}-cmd:nc 127.0.0.1 {registry_port}"
    # romfile= : no iPXE option ROM, so the firmware never tries a network boot.
    # A fixed slot on the root bus: libvirt fills pcie.0 from slot 1 with its root ports
    # and does not know about this device, so an automatic address would collide.
    # guest_announce=off: a restore is an incoming migration to QEMU, after which the device
    # has the guest announce itself to the switches; user networking has none. That
    # announce work is where a restored x86_64 guest's kernel once died under TCG.
    return [
        "-netdev",
        netdev,
        "-device",
        "virtio-net-pci,netdev=net0,romfile=,bus=pcie.0,addr=0x10,guest_announce=off",
    ]


def qemu_args(spec: "DomainSpec") -> list[str]:
    """The arguments libvirt passes on to QEMU as they are (qemu:commandline)."""
    args = netdev_args(spec.ssh_port, spec.registry_port)
    if spec.smbios_uuid:
        args += ["-smbios", f"type=1,uuid={spec.smbios_uuid}"]
    return args


def metadata_element(owner: Owner, workdir: Path) -> ET.Element:
    el = ET.Element(f"{{{METADATA_NS}}}owner")
    el.set("run", owner.run_id)
    el.set("pid", str(owner.pid))
    el.set("pidstart", str(owner.pid_start))
    el.set("keep", "yes" if owner.keep else "no")
    el.set("dir", str(workdir))
    return el


def parse_metadata(xml: str) -> tuple[Owner, Path] | None:
    """The owner and folder from a domain's full XML or its metadata element."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    tag = f"{{{METADATA_NS}}}owner"
    # virDomainGetMetadata returns the element alone and without its namespace.
    el = root if root.tag in (tag, "owner") else root.find(f".//{tag}")
    if el is None:
        return None
    try:
        owner = Owner(
            el.get("run", ""),
            int(el.get("pid", "0")),
            int(el.get("pidstart", "0")),
            el.get("keep") == "yes",
        )
    except ValueError:
        return None
    return owner, Path(el.get("dir", ""))


def domain_xml(spec: DomainSpec) -> str:
    arch = spec.arch.name
    dom = ET.Element("domain", {"type": "kvm" if spec.accel == "kvm" else "qemu"})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    _sub(dom, "metadata").append(metadata_element(spec.owner, spec.workdir))
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=arch, machine=MACHINE_TYPE[arch])
    _sub(os_el, "loader", str(spec.firmware.code), readonly="yes", type="pflash")
    _sub(os_el, "nvram", str(spec.nvram))

    features = _sub(dom, "features")
    _sub(features, "acpi")
    if spec.accel == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    else:
        cpu = _sub(dom, "cpu", mode="custom", match="exact")
        _sub(cpu, "model", spec.cpu_model or TCG_CPU[arch], fallback="forbid")
        for name in TCG_CPU_FEATURES_OFF[arch]:
            _sub(cpu, "feature", policy="disable", name=name)
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "destroy" if spec.cold_reboots else "restart")
    _sub(dom, "on_crash", "destroy")

    # Run QEMU as the invoking user so it reads the build folder as is: no relabeling,
    # no libvirt-qemu user needing access to the checkout.
    dev = _sub(dom, "devices")
    _sub(dev, "emulator", f"/usr/bin/qemu-system-{spec.arch.qemu_system}")
    if any(d.device == "cdrom" for d in spec.disks):
        # virtio-scsi works on both q35 and virt (aarch64 virt has no SATA/IDE).
        _sub(dev, "controller", type="scsi", index="0", model="virtio-scsi")
    for disk in spec.disks:
        el = _sub(dev, "disk", type="file", device=disk.device)
        # writeback honours guest flushes, so a power cut (virDomainDestroy) loses only
        # what the guest had not fsynced, as on real hardware; "unsafe" would not.
        driver = {"name": "qemu", "type": disk.format, "cache": "writeback"}
        if disk.device == "disk" and not disk.readonly:
            driver["discard"] = "unmap"
        _sub(el, "driver", **driver)
        _sub(el, "source", file=str(disk.path))
        bus = "scsi" if disk.device == "cdrom" else "virtio"
        _sub(el, "target", dev=disk.target, bus=bus)
        if disk.readonly:
            _sub(el, "readonly")
        if disk.boot_order is not None:
            _sub(el, "boot", order=str(disk.boot_order))
    serial = _sub(dev, "serial", type="file")
    # append: the log keeps every boot of the machine; the harness tracks offsets.
    _sub(serial, "source", path=str(spec.console_log), append="on")
    _sub(serial, "target", port="0")
    _sub(dev, "controller", type="usb", model="none")
    _sub(dev, "memballoon", model="none")
    rng = _sub(dev, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")  # sshd and cloud-init need entropy early

    sec = _sub(dom, "seclabel", type="static", model="dac", relabel="no")
    _sub(sec, "label", f"+{spec.uid}:+{spec.gid}")

    cmdline = _sub(dom, f"{{{QEMU_NS}}}commandline")
    for arg in qemu_args(spec):
        _sub(cmdline, f"{{{QEMU_NS}}}arg", value=arg)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"
