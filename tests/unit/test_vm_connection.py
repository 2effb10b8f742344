"""Which libvirt URIs the harness accepts: any whose hypervisor runs on this host; one
naming another host is refused before any connection is tried."""

import socket
import time

import pytest

from vm.connection import check_local_uri, connect, remote_uri_problem
from vm.errors import VmError


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "test:///default",
        "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
        "qemu+ssh://root@localhost/system",
        "qemu+ssh://root@127.0.0.1:22/system",
        "qemu+tcp://[::1]/system",
        f"qemu+ssh://root@{socket.gethostname()}/system",
    ],
)
def test_uris_of_this_host_are_accepted(uri: str) -> None:
    assert remote_uri_problem(uri) is None
    check_local_uri(uri)


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("qemu+ssh://root@192.0.2.10/system", "192.0.2.10"),  # TEST-NET-1: never local
        ("qemu+tls://[2001:db8::1]/system", "2001:db8::1"),  # documentation prefix
        ("qemu+ssh://root@build-host.invalid/system", "build-host.invalid"),  # no address
    ],
)
def test_uris_of_another_host_are_refused(uri: str, host: str) -> None:
    problem = remote_uri_problem(uri)
    assert problem is not None
    assert problem.startswith(f"libvirt URI {uri!r} names the host {host!r}")
    assert "local files" in problem and "127.0.0.1" in problem  # why it cannot work
    with pytest.raises(VmError, match="which is not this host"):
        check_local_uri(uri)


def test_connect_refuses_another_host_before_connecting() -> None:
    start = time.monotonic()
    with pytest.raises(VmError, match="names the host '192.0.2.10'"):
        connect("qemu+ssh://root@192.0.2.10/system")
    assert time.monotonic() - start < 2  # no ssh to an unreachable address was tried


def test_connect_to_a_local_uri() -> None:
    conn = connect("test:///default")  # libvirt's built-in test driver: no daemon needed
    assert conn.getURI() == "test:///default"
    assert connect("test:///default") is conn  # one connection per URI per process
