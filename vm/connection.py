"""libvirt connections: one per URI per process, with a clear error when libvirtd is down
or when the URI names another host.

The harness drives a hypervisor on this host only: it writes each machine's disks, seed
and firmware variables into local files, reads the serial console from a local log, and
reaches the guest's SSH on a forward to 127.0.0.1. So any libvirt URI whose hypervisor
runs here works (qemu:///system, qemu+unix:///system?socket=..., or a remote transport
back to this host such as qemu+ssh://root@localhost/system); one naming another host is
refused before connecting.
"""

import contextlib
import ipaddress
import os
import socket
import threading
from urllib.parse import urlsplit

import libvirt

from vm.errors import LibvirtUnavailable, VmError

DEFAULT_URI = "qemu:///system"

_connections: dict[tuple[int, str], libvirt.virConnect] = {}
_lock = threading.Lock()


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


libvirt.registerErrorHandler(_quiet, None)


def default_uri() -> str:
    return os.environ.get("COS_LIBVIRT_URI") or DEFAULT_URI


def _address_of_this_host(address: str) -> bool:
    """Loopback, or assigned to one of this host's interfaces (only those can be bound)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False  # not ours (or no such address family here)
    return True


def _names_this_host(host: str) -> bool:
    if host.lower() in ("localhost", socket.gethostname().lower()):
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False  # a name that does not resolve is not known to be this host
    return bool(addresses) and all(_address_of_this_host(a) for a in addresses)


def remote_uri_problem(uri: str) -> str | None:
    """Why the harness cannot use `uri` (it names another host), or None."""
    host = urlsplit(uri).hostname  # None for "qemu:///system", "test:///default"
    if not host or _names_this_host(host):
        return None
    return (
        f"libvirt URI {uri!r} names the host {host!r}, which is not this host: the harness "
        "only drives a hypervisor on this host (it keeps the machines' disks and serial "
        "console logs in local files and reaches their SSH on 127.0.0.1). Use a URI of "
        "this host's libvirt, such as qemu:///system, or run the tests on that host"
    )


def check_local_uri(uri: str) -> None:
    """Raise VmError when `uri` names another host (see the module docstring)."""
    problem = remote_uri_problem(uri)
    if problem:
        raise VmError(problem)


def connect(uri: str | None = None) -> libvirt.virConnect:
    """A live connection. Domains started with AUTODESTROY die with it, so it is kept for
    the life of the process (per pid: a forked child must not share the parent's)."""
    uri = uri or default_uri()
    key = (os.getpid(), uri)
    with _lock:
        conn = _connections.get(key)
        if conn is not None and conn.isAlive():
            return conn
        check_local_uri(uri)
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise LibvirtUnavailable(
                "libvirtd is not running: start it with `invoke setup` or `libvirtd -d` "
                f"(connecting to {uri}: {exc.get_error_message()})"
            ) from None
        # An alias from libvirt.conf names no host: check what it stands for.
        canonical = conn.getURI()
        problem = remote_uri_problem(canonical) if canonical != uri else None
        if problem:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            raise VmError(f"{problem} (the URI {uri!r} stands for it)")
        _connections[key] = conn
        return conn
