"""What one step does. Each action reports problems instead of stopping the stage."""

import os
import pwd
import socket
import subprocess
from pathlib import Path


def set_hostname(name: str) -> None:
    name = str(name).split(".")[0]
    Path("/etc/hostname").write_text(name + "\n")
    socket.sethostname(name)
    hosts = Path("/etc/hosts")
    lines = (
        [line for line in hosts.read_text().splitlines() if not line.startswith("127.0.1.1")]
        if hosts.exists()
        else []
    )
    hosts.write_text("\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n")


def ensure_user(name: str, spec: dict) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        args = ["useradd", "--create-home", "--shell", spec.get("shell", "/bin/bash")]
        if spec.get("groups"):
            groups = spec["groups"]
            args += ["--groups", groups if isinstance(groups, str) else ",".join(groups)]
        subprocess.run([*args, name], check=True)
    # Never a password login: accounts are for keys only unless a hash is given.
    if spec.get("passwd"):
        subprocess.run(["usermod", "--password", spec["passwd"], name], check=True)
    keys = spec.get("ssh_authorized_keys") or spec.get("ssh-authorized-keys") or []
    if keys:
        add_authorized_keys(name, keys)


def add_authorized_keys(user: str, keys: list[str]) -> None:
    entry = pwd.getpwnam(user)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = ssh_dir / "authorized_keys"
    existing = path.read_text().splitlines() if path.exists() else []
    merged = existing + [k.strip() for k in keys if k.strip() and k.strip() not in existing]
    path.write_text("\n".join(merged) + "\n")
    for p in (ssh_dir, path):
        os.chown(p, entry.pw_uid, entry.pw_gid)
    path.chmod(0o600)


def write_file(spec: dict) -> None:
    path = Path(spec["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    content = spec.get("content", "")
    if spec.get("encoding") in ("b64", "base64"):
        import base64

        data = base64.b64decode(content)
    else:
        data = str(content).encode()
    mode = "ab" if spec.get("append") else "wb"
    with open(path, mode) as f:
        f.write(data)
    perms = spec.get("permissions")
    if perms is not None:
        path.chmod(int(str(perms), 8))
    owner = spec.get("owner")
    if owner:
        user, _, group = str(owner).partition(":")
        subprocess.run(["chown", f"{user}:{group}" if group else user, str(path)], check=True)


def run_command(command) -> str:
    """A string runs through the shell, a list as argv (cloud-init's convention)."""
    argv = ["sh", "-c", command] if isinstance(command, str) else [str(c) for c in command]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[-500:]}"
        )
    return result.stdout
