"""libvirt connections: one per URI per process, with a clear error when libvirtd is down."""

import os
import threading

import libvirt

from vm.errors import LibvirtUnavailable

DEFAULT_URI = "qemu:///system"

_connections: dict[tuple[int, str], libvirt.virConnect] = {}
_lock = threading.Lock()


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


libvirt.registerErrorHandler(_quiet, None)


def default_uri() -> str:
    return os.environ.get("COS_LIBVIRT_URI") or DEFAULT_URI


def connect(uri: str | None = None) -> libvirt.virConnect:
    """A live connection. Domains started with AUTODESTROY die with it, so it is kept for
    the life of the process (per pid: a forked child must not share the parent's)."""
    uri = uri or default_uri()
    key = (os.getpid(), uri)
    with _lock:
        conn = _connections.get(key)
        if conn is not None and conn.isAlive():
            return conn
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise LibvirtUnavailable(
                "libvirtd is not running: start it with `invoke setup` or `libvirtd -d` "
                f"(connecting to {uri}: {exc.get_error_message()})"
            ) from None
        _connections[key] = conn
        return conn
