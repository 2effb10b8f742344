"""SSH to a guest through its 127.0.0.1 forward: connect, run, copy."""

import logging
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

# paramiko logs every failed handshake while a guest boots; the harness reports instead.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

CONNECT_SECONDS = 10.0
EOF_GRACE_SECONDS = 5.0
BANNER_PREFIX = b"SSH-"


class AcceptAnyHostKey(paramiko.MissingHostKeyPolicy):
    """Test guests get new host keys with every image; there is nothing to pin."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        return None


@dataclass(frozen=True)
class CommandResult:
    command: str
    rc: int
    stdout: str
    stderr: str


def connect(
    port: int,
    key_file: Path,
    user: str = "root",
    timeout: float = CONNECT_SECONDS,
    sock: socket.socket | None = None,
) -> paramiko.SSHClient:
    """One attempt, on a new connection or on `sock` (from `wait_banner`). Raises
    OSError / paramiko.SSHException when the guest is not ready."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(AcceptAnyHostKey())
    try:
        client.connect(
            "127.0.0.1", port=port, username=user, key_filename=str(key_file),
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            allow_agent=False, look_for_keys=False, sock=sock,
        )  # fmt: skip
    except BaseException:
        client.close()
        if sock is not None:
            sock.close()  # in case paramiko failed before it took the socket over
        raise
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)  # notice a guest that went away (reboot, power cut)
    return client


def is_alive(client: paramiko.SSHClient | None) -> bool:
    if client is None:
        return False
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def run(client: paramiko.SSHClient, command: str, timeout: float) -> CommandResult:
    """Run `command`, reading stdout and stderr together so neither pipe fills up."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("SSH connection is closed")
    channel = transport.open_session(timeout=CONNECT_SECONDS)
    out, err = bytearray(), bytearray()
    try:
        channel.exec_command(command)
        deadline = time.monotonic() + timeout
        exited_at = None
        while True:
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.closed or (channel.eof_received and channel.exit_status_ready()):
                break  # EOF comes after the last output: all of it is buffered
            elif channel.exit_status_ready():
                # The exit status can come before the last output (sshd reports the exit
                # when it happens), or in the same read as it, just after recv_ready() above
                # said no: stopping at the status lost output (`cat` of a file printed
                # nothing once). Read on until EOF; a background process that keeps the
                # output open gets a short grace, as it would not with ssh(1).
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > EOF_GRACE_SECONDS:
                    break
                time.sleep(0.01)
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"command {command!r} did not finish within {timeout:.0f} s; output so far:\n"
                    f"{out.decode(errors='replace')}{err.decode(errors='replace')}"
                )
            else:
                time.sleep(0.01)
        rc = channel.recv_exit_status() if channel.exit_status_ready() else -1
        # What arrived between the last read and EOF.
        while channel.recv_ready():
            out += channel.recv(65536)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
    finally:
        channel.close()
    return CommandResult(command, rc, out.decode(errors="replace"), err.decode(errors="replace"))


def put(client: paramiko.SSHClient, local: Path, remote: str) -> None:
    with client.open_sftp() as sftp:
        _put(sftp, local, remote)


def _put(sftp: paramiko.SFTPClient, local: Path, remote: str) -> None:
    if local.is_dir():
        try:
            sftp.mkdir(remote)
        except OSError:
            pass  # exists
        for child in sorted(local.iterdir()):
            _put(sftp, child, f"{remote.rstrip('/')}/{child.name}")
    else:
        sftp.put(str(local), remote)
        sftp.chmod(remote, stat.S_IMODE(local.stat().st_mode))


def get(client: paramiko.SSHClient, remote: str, local: Path) -> None:
    with client.open_sftp() as sftp:
        _get(sftp, remote, local)


def _get(sftp: paramiko.SFTPClient, remote: str, local: Path) -> None:
    mode = sftp.stat(remote).st_mode or 0
    if stat.S_ISDIR(mode):
        local.mkdir(parents=True, exist_ok=True)
        for name in sorted(sftp.listdir(remote)):
            _get(sftp, f"{remote.rstrip('/')}/{name}", local / name)
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        sftp.get(remote, str(local))


def wait_banner(
    port: int, timeout: float, abort: Callable[[], bool] | None = None
) -> socket.socket | None:
    """The connection on which sshd's banner arrived within `timeout`, or None.

    QEMU's user network accepts the TCP connection before the guest listens, so only the
    banner proves sshd is up. The banner is peeked at, not read: the caller hands the
    socket to `connect`, so the guest starts one SSH session per login, not two (each
    costs it a few tenths of a second of CPU under emulation, at the busiest moment of
    its boot). The wait is short-sliced so `abort` (dead-end console, stopped domain) is
    checked every 0.2 s instead of blocking in a handshake.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        if abort is not None and abort():
            break
        try:
            data = sock.recv(len(BANNER_PREFIX), socket.MSG_PEEK)
        except TimeoutError:
            continue
        except OSError:
            break
        if data == BANNER_PREFIX:
            sock.settimeout(None)
            return sock
        if not data or not BANNER_PREFIX.startswith(data):
            break  # closed, or not sshd
        time.sleep(0.05)  # part of the prefix so far: peeking again returns at once
    sock.close()
    return None
