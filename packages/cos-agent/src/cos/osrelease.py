"""Read os-release of the running system or of a mounted image."""

import shlex
from pathlib import Path


def read(root: Path = Path("/")) -> dict[str, str]:
    for candidate in (root / "etc/os-release", root / "usr/lib/os-release"):
        if candidate.exists():
            values = {}
            for line in candidate.read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    parts = shlex.split(value)
                    values[key] = parts[0] if parts else ""
            return values
    return {}
