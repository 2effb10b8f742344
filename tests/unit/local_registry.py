"""What the tests that run a real docker-registry on 127.0.0.1 share."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet(_: str) -> None:
    pass
