"""What the initramfs recorded about this boot, and the boot-assessment state in grubenv."""

from pathlib import Path

from cos import grubenv
from cos.partitions import mounted

BOOT_FILE = Path("/run/cos/boot")
GRUBENV = Path("EFI/cos/grubenv")


def current_boot() -> dict[str, str]:
    if not BOOT_FILE.exists():
        return {}
    return dict(line.split("=", 1) for line in BOOT_FILE.read_text().split() if "=" in line)


def read_grubenv() -> dict[str, str]:
    with mounted("COS_GRUB") as esp:
        return grubenv.read(esp / GRUBENV)


def update_grubenv(**changes: str) -> dict[str, str]:
    with mounted("COS_GRUB", writable=True) as esp:
        return grubenv.update(esp / GRUBENV, **changes)


def mark_good() -> dict[str, str]:
    """This boot passed its health checks: end any tentative state (writes only if any)."""
    env = read_grubenv()
    if not env.get("cos_tentative") and not env.get("cos_attempts"):
        return env
    return update_grubenv(cos_tentative="", cos_attempts="")
