"""Acceleration: KVM only when a KVM guest really runs, else TCG; and how much slower
every wait must be under emulation.

A /dev/kvm node is no proof: on some hosts it opens fine while every guest dies (an MSR
the host refuses, an FPU instruction KVM cannot emulate). So the probe boots the real UEFI
firmware with `-accel kvm -cpu host` (the exact CPU setup a KVM domain gets) and waits for
the firmware's boot manager to print on the serial port.
"""

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit import paths
from toolkit.arch import get_arch, host_arch
from vm.errors import VmError
from vm.firmware import find_firmware

ProbeResult = tuple[bool, str]  # (kvm works, why)
PROBE_SECONDS = 30.0
# Base timeouts are written for KVM; emulation multiplies them.
SCALE = {"kvm": 1.0, "tcg": 4.0, "tcg-foreign": 8.0}


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str

    @property
    def domain_type(self) -> str:
        return "kvm" if self.name == "kvm" else "qemu"


def accel_cache_file() -> Path:
    return paths.build_dir() / "vm" / "accel.json"


def _host_key() -> str:
    # The kernel release is part of the key: a new kernel may fix (or break) KVM.
    return f"{socket.gethostname()} {os.uname().release}"


def probe_kvm(guest_arch: str, timeout: float = PROBE_SECONDS) -> ProbeResult:
    """Boot the UEFI firmware under KVM and watch its serial output."""
    if guest_arch != host_arch():
        return False, f"{guest_arch} guests cannot use KVM on a {host_arch()} host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    arch = get_arch(guest_arch)
    firmware = find_firmware(arch)
    machine = "q35" if guest_arch == "x86_64" else "virt"
    with tempfile.TemporaryDirectory(prefix="cos-kvm-probe-") as tmp:
        nvram = Path(tmp) / "vars.fd"
        nvram.write_bytes(firmware.vars_template.read_bytes())
        serial = Path(tmp) / "serial.log"
        cmd = [
            f"qemu-system-{arch.qemu_system}", "-accel", "kvm", "-machine", machine,
            "-cpu", "host", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{serial}",
            "-drive", f"if=pflash,format=raw,readonly=on,file={firmware.code}",
            "-drive", f"if=pflash,format=raw,file={nvram}",
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        except FileNotFoundError:
            return False, f"{cmd[0]} is not installed"
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if serial.exists() and b"BdsDxe" in serial.read_bytes():
                    return True, "a KVM guest ran the UEFI firmware to its boot manager"
                if proc.poll() is not None:
                    err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
                    return False, f"KVM guest died (exit {proc.returncode}): {' '.join(err[-2:])}"
                time.sleep(0.2)
            return False, f"KVM guest printed nothing in {timeout:.0f} s"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_accel(
    guest_arch: str,
    *,
    probe: Callable[[str], ProbeResult] = probe_kvm,
    cache_file: Path | None = None,
) -> Accel:
    """KVM when the (cached) probe says a KVM guest runs; TCG otherwise.

    COS_VM_ACCEL=kvm|tcg overrides the probe.
    """
    forced = os.environ.get("COS_VM_ACCEL", "").strip()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise VmError(f"COS_VM_ACCEL={forced!r} is not valid; use kvm or tcg")
        return Accel(forced, "forced by COS_VM_ACCEL")
    if guest_arch != host_arch():
        return Accel("tcg", f"{guest_arch} is emulated on a {host_arch()} host")
    path = cache_file or accel_cache_file()
    cache = _read_cache(path)
    entry = cache.get(_host_key(), {}).get(guest_arch)
    if isinstance(entry, dict) and entry.get("accel") in ("kvm", "tcg"):
        return Accel(entry["accel"], f"{entry.get('reason', '')} (cached in {path})")
    works, reason = probe(guest_arch)
    accel = Accel("kvm" if works else "tcg", reason)
    cache.setdefault(_host_key(), {})[guest_arch] = {
        "accel": accel.name,
        "reason": reason,
        "probed_at": int(time.time()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(cache, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: parallel workers never read half a file
    return accel


def timeout_scale(accel: str, guest_arch: str, host: str | None = None) -> float:
    """1 under KVM, 4 for TCG of the host's arch, 8 for a foreign arch.

    COS_VM_TIMEOUT_SCALE multiplies on top (slow CI runners, many parallel workers).
    """
    if accel == "kvm":
        scale = SCALE["kvm"]
    elif guest_arch == (host or host_arch()):
        scale = SCALE["tcg"]
    else:
        scale = SCALE["tcg-foreign"]
    extra = os.environ.get("COS_VM_TIMEOUT_SCALE", "").strip()
    if extra:
        try:
            scale *= float(extra)
        except ValueError:
            raise VmError(f"COS_VM_TIMEOUT_SCALE={extra!r} is not a number") from None
    return scale
