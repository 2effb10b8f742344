"""Making a fresh Debian 12/13 machine ready: apt packages, aarch64 binfmt, libvirtd.

Idempotent: each step checks first and says what it did. Without root it prints the
exact command to run instead.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from toolkit.errors import CosError

APT_PACKAGES = [
    # machines and firmware
    "qemu-system-x86",
    "qemu-system-arm",
    "qemu-utils",
    "ovmf",
    "qemu-efi-aarch64",
    "libvirt-daemon-system",
    "libvirt-clients",
    "libxml2-utils",
    # foreign-arch builds
    "qemu-user-static",
    "binfmt-support",
    "arch-test",
    # images
    "mmdebstrap",
    "e2fsprogs",
    "dosfstools",
    "mtools",
    "squashfs-tools",
    "xorriso",
    # Containerfile flavors (toolkit/derivative.py): `buildah bud --isolation chroot`
    "buildah",
    "fdisk",
    "grub-common",
    "grub-efi-amd64-bin",
    "cpio",
    "zstd",
    "gnupg",
    "apt",
    # registry, OCI tools and the guest forward to it
    "docker-registry",
    "skopeo",
    "umoci",
    "netcat-openbsd",
    "openssl",
    # htpasswd: the authenticated registry in the push tests
    "apache2-utils",
    # `invoke vm.ssh` and the kept-machine scenario run the ssh client
    "openssh-client",
]
# fix_settings(log) -> True when it changed a setting libvirtd reads only at start
SettingsFix = Callable[[Callable[[str], None]], bool]
BINFMT_NAME = "qemu-aarch64"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
LIBVIRT_URI = "qemu:///system"


def is_root() -> bool:
    return os.geteuid() == 0


def missing_packages(packages: list[str] = APT_PACKAGES) -> list[str]:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")
    }
    return [p for p in packages if p not in installed]


def ensure_packages(log=print, packages: list[str] = APT_PACKAGES) -> None:
    missing = missing_packages(packages)
    if not missing:
        log(f"apt: all {len(packages)} packages present")
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not is_root():
        raise CosError(
            "missing apt packages; run as root:\n  sudo apt-get update && sudo " + " ".join(command)
        )
    log(f"apt: installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    if subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        raise CosError("apt-get install failed for: " + " ".join(missing))


def ensure_binfmt(log=print) -> None:
    """aarch64 binaries must run through qemu-user for mmdebstrap --arch=arm64."""
    if (BINFMT_DIR / BINFMT_NAME).exists():
        log("binfmt: qemu-aarch64 registered")
        return
    if not is_root():
        raise CosError(
            "qemu-aarch64 binfmt handler missing; run as root:\n  sudo mount -t binfmt_misc "
            f"binfmt_misc {BINFMT_DIR} ; sudo update-binfmts --enable {BINFMT_NAME}"
        )
    if not (BINFMT_DIR / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], check=True)
    subprocess.run(["update-binfmts", "--enable", BINFMT_NAME], capture_output=True, check=False)
    if not (BINFMT_DIR / BINFMT_NAME).exists():
        # No binfmt-support database entry: register straight from systemd's config.
        line = Path(f"/usr/lib/binfmt.d/{BINFMT_NAME}.conf").read_text().strip()
        (BINFMT_DIR / "register").write_text(line)
    if not (BINFMT_DIR / BINFMT_NAME).exists():
        raise CosError(f"could not register the {BINFMT_NAME} binfmt handler")
    log("binfmt: registered qemu-aarch64")


def libvirt_answers(uri: str = LIBVIRT_URI) -> bool:
    result = subprocess.run(
        ["virsh", "-c", uri, "version"], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


def restart_libvirtd(log=print) -> None:
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "restart", "libvirtd"], check=False, capture_output=True)
        return
    subprocess.run(["pkill", "-x", "libvirtd"], check=False)
    for _ in range(40):
        if subprocess.run(["pgrep", "-x", "libvirtd"], check=False, capture_output=True).returncode:
            break
        time.sleep(0.25)
    log("libvirt: restarting libvirtd")


def ensure_libvirtd(log=print, fix_settings: SettingsFix | None = None) -> None:
    """libvirtd answers on qemu:///system. `fix_settings(log)` first applies host settings
    that libvirtd reads at start (the harness's, vm.hostcheck.fix_libvirt_settings) and
    says whether it changed one: then a running libvirtd is restarted."""
    if fix_settings is not None and fix_settings(log) and libvirt_answers():
        restart_libvirtd(log)
    if libvirt_answers():
        log("libvirt: libvirtd answers on qemu:///system")
        return
    if not is_root():
        raise CosError(
            "libvirtd is not running; run as root:\n  sudo virtlogd -d && sudo libvirtd -d"
        )
    systemd_running = Path("/run/systemd/system").is_dir()
    for daemon in ("virtlogd", "libvirtd"):
        if systemd_running:
            subprocess.run(["systemctl", "start", daemon], capture_output=True, check=False)
        elif (
            subprocess.run(["pgrep", "-x", daemon], capture_output=True, check=False).returncode
            != 0
        ):
            subprocess.run([shutil.which(daemon) or f"/usr/sbin/{daemon}", "-d"], check=True)
    for _ in range(60):
        if libvirt_answers():
            log("libvirt: started virtlogd and libvirtd")
            return
        time.sleep(0.5)
    raise CosError("libvirtd did not start: see `journalctl -u libvirtd` or /var/log/libvirt")


def ensure_host(
    log=print,
    arches: tuple[str, ...] = ("x86_64", "aarch64"),
    fix_libvirt_settings: SettingsFix | None = None,
) -> None:
    """What building needs, and libvirtd. The harness adds its libvirt settings through
    `fix_libvirt_settings` (vm.hostcheck.ensure_host does): toolkit never imports vm."""
    ensure_packages(log)
    if "aarch64" in arches:
        ensure_binfmt(log)
    ensure_libvirtd(log, fix_libvirt_settings)
