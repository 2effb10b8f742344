"""Host problems that make the harness slow or fail, found before a test waits on them,
and fixed by the host setup (`invoke setup`, build, test and bench run ensure_host())."""

import grp
import os
import pwd
import re
import stat
from collections.abc import Callable
from pathlib import Path

from toolkit import hostsetup

KVM = Path("/dev/kvm")
QEMU_USER = "libvirt-qemu"  # Debian's default `user` in /etc/libvirt/qemu.conf


def kvm_device_problem(device: Path = KVM, user: str = QEMU_USER) -> str | None:
    """libvirt caches QEMU's capabilities, but throws the cache away on every lookup when
    /dev/kvm exists yet its QEMU user cannot open it ("KVM was enabled when probing, but it
    is not available now"): each domain start then re-probes QEMU for about a minute.
    Debian's udev rule (group kvm, mode 0660) avoids it; containers often lack it."""
    try:
        st = device.stat()
        account = pwd.getpwnam(user)
    except (OSError, KeyError):
        return None
    groups = os.getgrouplist(user, account.pw_gid)
    mode = st.st_mode
    usable = (
        (st.st_uid == account.pw_uid and mode & stat.S_IRUSR and mode & stat.S_IWUSR)
        or (st.st_gid in groups and mode & stat.S_IRGRP and mode & stat.S_IWGRP)
        or (mode & stat.S_IROTH and mode & stat.S_IWOTH)
    )
    if usable:
        return None
    return (
        f"{device} is not usable by {user}, so libvirt re-probes QEMU on every domain start "
        f"(about a minute each); fix it with `chgrp kvm {device} && chmod 0660 {device}` "
        "(`vm.hostcheck.fix_kvm_device()`, as udev does on a normal host)"
    )


def fix_kvm_device(device: Path = KVM) -> bool:
    """Give /dev/kvm udev's usual group and mode (root only). True if it changed."""
    if kvm_device_problem(device) is None:
        return False
    os.chown(device, -1, grp.getgrnam("kvm").gr_gid)
    os.chmod(device, 0o660)
    return True


QEMU_CONF = Path("/etc/libvirt/qemu.conf")
_SECCOMP_OFF = re.compile(r"^\s*seccomp_sandbox\s*=\s*0\s*$", re.MULTILINE)


def seccomp_problem(conf: Path = QEMU_CONF) -> str | None:
    """libvirt starts QEMU with `-sandbox on,...,spawn=deny` unless qemu.conf says
    `seccomp_sandbox = 0`; the registry forward (guestfwd ...-cmd:nc) spawns a process per
    connection, and the filter kills QEMU the moment the guest connects."""
    try:
        text = conf.read_text()
    except OSError:
        return None  # not readable here: cannot tell
    if _SECCOMP_OFF.search(text):
        return None
    return (
        f"libvirt's QEMU seccomp sandbox (spawn=deny) kills the guest when it reaches the "
        f"registry forward: add `seccomp_sandbox = 0` to {conf} and restart libvirtd "
        "(`vm.hostcheck.fix_seccomp()`, then restart libvirtd)"
    )


def fix_seccomp(conf: Path = QEMU_CONF) -> bool:
    """Turn libvirt's QEMU seccomp sandbox off (root only; libvirtd must be restarted to
    take it). True if the file changed."""
    if seccomp_problem(conf) is None:
        return False
    with conf.open("a") as f:
        f.write(
            "\n# cOS harness: the registry guest forward (guestfwd ...-cmd:nc) spawns a process,\n"
            "# which the default seccomp filter (spawn=deny) punishes by killing QEMU.\n"
            "seccomp_sandbox = 0\n"
        )
    return True


def fix_libvirt_settings(log: Callable[[str], None] = print) -> bool:
    """Host settings the harness needs; True when libvirtd must restart to take them.
    Without root, each problem is a warning."""
    if not hostsetup.is_root():
        for problem in (kvm_device_problem(), seccomp_problem()):
            if problem:
                log(f"warning: {problem}")
        return False
    if fix_kvm_device():
        log(
            "kvm: /dev/kvm set to group kvm, mode 0660 (as udev does), so libvirt keeps "
            "its QEMU capability cache"
        )
    if fix_seccomp():
        log(
            "libvirt: seccomp_sandbox = 0 in /etc/libvirt/qemu.conf (the registry guest "
            "forward spawns nc, which the sandbox punishes)"
        )
        return True
    return False


def ensure_host(
    log: Callable[[str], None] = print, arches: tuple[str, ...] = ("x86_64", "aarch64")
) -> None:
    """The toolkit's host setup (apt packages, binfmt, libvirtd) with the harness's
    libvirt settings: what every task that may boot a machine runs first."""
    hostsetup.ensure_host(log, arches, fix_libvirt_settings=fix_libvirt_settings)
