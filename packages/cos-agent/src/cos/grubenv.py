"""GRUB's environment block: a 1024-byte file of key=value lines padded with '#'.

GRUB writes it in place (save_env) and so must we: the file keeps its size and its
blocks, or GRUB can no longer write it.
"""

import os
from pathlib import Path

from cos.errors import CosError
from cos.files import replace_atomically

HEADER = "# GRUB Environment Block\n"
SIZE = 1024


class GrubEnvError(CosError):
    pass


def parse(data: bytes, path: Path) -> dict[str, str]:
    text = data.decode("utf-8", "replace")
    if not text.startswith(HEADER):
        raise GrubEnvError(f"{path}: not a GRUB environment block")
    values = {}
    for line in text[len(HEADER) :].split("\n"):
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def render(values: dict[str, str], path: Path) -> bytes:
    body = HEADER + "".join(f"{k}={v}\n" for k, v in sorted(values.items()) if v != "")
    if len(body) > SIZE:
        raise GrubEnvError(f"{path}: environment exceeds {SIZE} bytes")
    return (body + "#" * (SIZE - len(body))).encode()


def read(path: Path) -> dict[str, str]:
    return parse(path.read_bytes(), path)


def create(path: Path, values: dict[str, str]) -> None:
    """A new block with `values`, put in place by one atomic rename (the slot pointer)."""
    replace_atomically(path, render(values, path))


def update(path: Path, **changes: str) -> dict[str, str]:
    """Set (or, with an empty value, unset) variables, rewriting the block in place."""
    values = read(path)
    values.update(changes)
    data = render(values, path)
    with open(path, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {k: v for k, v in values.items() if v != ""}
