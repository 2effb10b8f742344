"""The SSH readiness probe against real local TCP servers."""

import contextlib
import socket
import threading

from vm import ssh as sshlib


def serve_once(reply: bytes | None) -> int:
    """A one-connection server that sends `reply` (None: closes at once) and then keeps
    the connection open until the client hangs up."""
    server = socket.create_server(("127.0.0.1", 0))

    def handle():
        conn, _ = server.accept()
        with conn, server:
            if reply is not None:
                conn.sendall(reply)
                with contextlib.suppress(OSError):  # a client closing on unread data resets
                    conn.recv(1)

    threading.Thread(target=handle, daemon=True).start()
    return server.getsockname()[1]


def test_banner_is_left_unread_for_the_ssh_client():
    sock = sshlib.wait_banner(serve_once(b"SSH-2.0-OpenSSH_10.0\r\n"), timeout=5)
    assert sock is not None
    with sock:
        assert sock.recv(64).startswith(b"SSH-2.0-OpenSSH_10.0")


def test_a_forward_that_closes_or_is_not_sshd_is_no_banner():
    assert sshlib.wait_banner(serve_once(None), timeout=5) is None
    assert sshlib.wait_banner(serve_once(b"HTTP/1.1 400\r\n"), timeout=5) is None


def test_silence_ends_at_the_timeout_and_abort_ends_it_sooner():
    assert sshlib.wait_banner(serve_once(b""), timeout=0.5) is None
    assert sshlib.wait_banner(serve_once(b""), timeout=30, abort=lambda: True) is None
