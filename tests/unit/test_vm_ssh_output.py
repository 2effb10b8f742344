"""vm.ssh.run against a real SSH server (paramiko's) that sends a command's exit status
before its output, as sshd may: the output must not be lost (an empty `cat /run/cos/boot`
on aarch64 was that)."""

import socket
import threading

import paramiko
import pytest

from vm import ssh as sshlib


class ExitFirst(paramiko.ServerInterface):
    """Accepts any key; every command "exits" with status 3, then prints its own text."""

    def __init__(self):
        self.command = threading.Event()
        self.text = b""

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        self.text = bytes(command)
        self.command.set()
        return True


def serve(linger: float) -> int:
    listener = socket.create_server(("127.0.0.1", 0))

    def handle():
        conn, _ = listener.accept()
        listener.close()
        transport = paramiko.Transport(conn)
        transport.add_server_key(HOST_KEY)
        server = ExitFirst()
        transport.start_server(server=server)
        channel = transport.accept(10)
        server.command.wait(10)
        channel.send_exit_status(3)
        threading.Event().wait(linger)  # the output comes later than the status
        channel.sendall(server.text + b"\n")
        channel.sendall_stderr(b"to stderr\n")
        channel.shutdown_write()  # EOF
        channel.close()
        transport.close()

    threading.Thread(target=handle, daemon=True).start()
    return listener.getsockname()[1]


HOST_KEY = paramiko.RSAKey.generate(1024)


@pytest.mark.parametrize("linger", [0.0, 0.3])
def test_output_after_the_exit_status_is_kept(tmp_path, linger):
    key = tmp_path / "id_rsa"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(key))
    client = sshlib.connect(serve(linger), key)
    try:
        result = sshlib.run(client, "cat /run/cos/boot", timeout=10)
    finally:
        client.close()
    assert (result.rc, result.stdout, result.stderr) == (3, "cat /run/cos/boot\n", "to stderr\n")
