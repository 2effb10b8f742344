"""The slot state: which image files are active and passive, the pointer GRUB reads, what
each slot holds, and the boot assessment.

On COS_STATE:
    cOS/state.env      the pointer: a GRUB environment block with cos_active and
                       cos_passive (slot names); replaced only by one atomic rename
    cOS/slots/N.img    slot images, N a generation number that only grows
    cOS/slots/N.json   what slot N holds: flavor, version, image and digest, layers, when
    cOS/slots/N.layers.json   for each layer above the first: the paths it wrote and
                       whether it only added (so an upgrade can take it off a copy)
    cOS/history.json   the last upgrade and the last rollback
On COS_GRUB, EFI/cos/grubenv (GRUB writes it too):
    cos_tentative=N    slot N's first boot is on trial; ignored unless N is active
    cos_attempts       trial boots GRUB has started
    cos_failed=N       GRUB fell back from slot N; it boots passive while N is active
    cos_fail_reason    why the trial boot failed, when it got far enough to say
    next_entry, saved_entry   GRUB's one-shot and lasting menu choices
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cos import grubenv
from cos.errors import CosError
from cos.files import read_json, write_json
from cos.partitions import mounted

POINTER = Path("cOS/state.env")
SLOTS = Path("cOS/slots")
HISTORY = Path("cOS/history.json")
GRUBENV = Path("EFI/cos/grubenv")
BOOT_FILE = Path("/run/cos/boot")
ASSESSMENT_KEYS = ("cos_tentative", "cos_attempts", "cos_failed", "cos_fail_reason")


@dataclass(frozen=True)
class Pointer:
    active: str
    passive: str

    def swapped(self) -> "Pointer":
        return Pointer(active=self.passive, passive=self.active)


def image_path(root: Path, name: str) -> Path:
    return root / SLOTS / f"{name}.img"


def info_path(root: Path, name: str) -> Path:
    return root / SLOTS / f"{name}.json"


def layers_path(root: Path, name: str) -> Path:
    return root / SLOTS / f"{name}.layers.json"


def files_of(root: Path, name: str) -> list[Path]:
    """Slot `name`'s image and what is recorded about it."""
    return sorted(p for p in (root / SLOTS).iterdir() if p.name.split(".")[0] == name)


def read_pointer(root: Path) -> Pointer:
    path = root / POINTER
    try:
        env = grubenv.read(path)
    except FileNotFoundError:
        raise CosError(f"{path}: missing; this disk has no slot pointer") from None
    active, passive = env.get("cos_active", ""), env.get("cos_passive", "")
    if not active.isdigit() or not passive.isdigit():
        raise CosError(f"{path}: cos_active={active!r}, cos_passive={passive!r}: not slot names")
    return Pointer(active, passive)


def write_pointer(root: Path, pointer: Pointer) -> None:
    """The switch: one rename makes `pointer` what GRUB boots next."""
    for name in (pointer.active, pointer.passive):
        if not image_path(root, name).is_file():
            raise CosError(f"{image_path(root, name)}: missing; the pointer would name no image")
    grubenv.create(root / POINTER, {"cos_active": pointer.active, "cos_passive": pointer.passive})


def slot_info(root: Path, name: str) -> dict:
    return read_json(info_path(root, name))


def next_name(root: Path) -> str:
    numbers = [int(p.stem) for p in (root / SLOTS).glob("*.img") if p.stem.isdigit()]
    return str(max(numbers, default=0) + 1)


def leftovers(root: Path, pointer: Pointer) -> list[Path]:
    """Files in the slot folder that no pointer names: what an interrupted upgrade left."""
    keep = {pointer.active, pointer.passive}
    return sorted(p for p in (root / SLOTS).iterdir() if p.name.split(".")[0] not in keep)


def record(root: Path, event: str, **facts: str) -> None:
    """Keep the last `event` ("upgrade" or "rollback") in the history, with its time."""
    history = read_json(root / HISTORY)
    history[f"last_{event}"] = {**facts, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(root / HISTORY, history)


def history(root: Path) -> dict:
    return read_json(root / HISTORY)


@contextmanager
def state_partition(writable: bool = False) -> Iterator[Path]:
    with mounted("COS_STATE", writable=writable) as root:
        yield root


def read_grubenv() -> dict[str, str]:
    with mounted("COS_GRUB") as esp:
        return grubenv.read(esp / GRUBENV)


def update_grubenv(**changes: str) -> dict[str, str]:
    with mounted("COS_GRUB", writable=True) as esp:
        return grubenv.update(esp / GRUBENV, **changes)


def current_boot() -> dict[str, str]:
    """What the initramfs recorded: slot (as GRUB's entry named it), image, label."""
    if not BOOT_FILE.exists():
        return {}
    return dict(line.split("=", 1) for line in BOOT_FILE.read_text().split() if "=" in line)


def booted_name(boot: dict[str, str]) -> str | None:
    """The slot name of the booted image, when it came from COS_STATE's slot folder."""
    image = Path(boot.get("image", ""))
    if boot.get("label") != "COS_STATE" or image.parent != Path("/") / SLOTS:
        return None
    return image.stem
