"""Machines meant to outlive the command that started them (`invoke vm.up`, --keep-vms):
their files live in build_dir()/vm/machines/<name>/ and their facts in <name>.json."""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit import paths
from vm.errors import VmError


@dataclass(frozen=True)
class KeptMachine:
    name: str  # short name given to vm.up
    domain: str  # libvirt domain name
    uri: str
    flavor: str
    arch: str
    ssh_port: int
    workdir: str
    ssh_config: str
    key: str

    @property
    def ssh_command(self) -> list[str]:
        return ["ssh", "-F", self.ssh_config, "root@127.0.0.1"]


def machines_dir() -> Path:
    return paths.build_dir() / "vm" / "machines"


def state_file(name: str) -> Path:
    return machines_dir() / f"{name}.json"


def save(machine: KeptMachine) -> Path:
    path = state_file(machine.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(machine), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load(name: str) -> KeptMachine:
    path = state_file(name)
    try:
        return KeptMachine(**json.loads(path.read_text()))
    except FileNotFoundError:
        known = ", ".join(m.name for m in all_machines()) or "none"
        raise VmError(f"no machine named {name!r} (state {path} missing); known: {known}") from None
    except (ValueError, TypeError) as exc:
        raise VmError(f"{path} is not a valid machine state: {exc}") from None


def all_machines() -> list[KeptMachine]:
    found = []
    for path in sorted(machines_dir().glob("*.json")) if machines_dir().is_dir() else []:
        try:
            found.append(KeptMachine(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def forget(name: str) -> None:
    state_file(name).unlink(missing_ok=True)
