"""`cos install DEVICE`: write a cOS disk (cos.layout's plan) from the running system or
from a signed OCI image.

Order, so that nothing GRUB would boot exists before the disk is whole: (1) every check
(device, size, use, partitions, image signature) before anything is written, (2) the
partition table, with the old ESP's signature wiped, (3) COS_STATE (slots 2 active and 1
passive as one hard-linked file, the pointer), COS_RECOVERY, COS_OEM (the install
config), COS_PERSISTENT, each synced and unmounted, (4) the ESP last: GRUB's EFI binary
at the removable-media path, grub.cfg and grubenv. A failure before (4) leaves a disk
with no bootable ESP.

Where the system comes from (--local):
    live (installer ISO)  /run/cos/state is the ISO: cOS/system.img (the built slot) and
                          cOS/recovery.img; without system.img, a slot made from the
                          recovery image's tree
    active or passive     the booted slot image on COS_STATE, COS_RECOVERY's image
    recovery              a slot made from the recovery image's tree, and that image
What each layer above the first wrote (N.layers.json, see cos.slots) goes with the slot
and the recovery image when the source has it, so the first upgrade after an install
pulls only the layers the installed system lacks.
"""

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cos import bootloader, grubenv, layout, recovery, slots
from cos.errors import CosError
from cos.files import fsync_dir, read_json, write_json
from cos.progress import Progress
from cos.runner import probe, run
from cos.stages import run_stage, target_root

WORK = Path("/run/cos/install")
BOOTED = Path("/run/cos/state")  # where the initramfs mounted the booted image's volume
ROOT = Path("/")
INSTALL_CONFIG = "90_install.yaml"  # the --config file's name on COS_OEM
FIRST_ACTIVE, FIRST_PASSIVE = "2", "1"


@dataclass
class Source:
    """What the new disk is made of."""

    describe: str
    recovery_image: Path
    recovery_info: dict
    slot_image: Path | None = None  # an ext4 slot to copy, else
    tree_image: Path | None = None  # a squashfs whose tree becomes the slot, else
    plan: object = None  # an OCI image (cos.upgrade.Plan) to write from its layers
    slot_info: dict = field(default_factory=dict)
    slot_mib: int = 0
    slot_records: list[dict] | None = None  # what the slot's layers wrote, when known
    recovery_records: list[dict] | None = None  # the same for the recovery image


# ---------------------------------------------------------------- checks


def device_size(device: str) -> int:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def existing_content(device: str) -> str | None:
    """What `blkid -p` finds on the device itself: a partition table or a file system."""
    found = probe(["blkid", "-p", "-o", "export", device])
    values = dict(line.split("=", 1) for line in found.splitlines() if "=" in line)
    if values.get("PTTYPE"):
        return f"a partition table ({values['PTTYPE']})"
    if values.get("TYPE"):
        return f"a file system ({values['TYPE']})"
    return None


def users_in(lsblk_json: str, swaps: str = "") -> list[str]:
    """Mount points and swap areas on a disk or its partitions, from `lsblk -J -o
    NAME,MOUNTPOINTS` of the disk and /proc/swaps."""
    found = []
    swapped = {line.split()[0] for line in swaps.splitlines()[1:] if line.split()}

    def walk(devices):
        for dev in devices:
            for point in dev.get("mountpoints") or []:
                if point:
                    found.append(f"{dev['name']} is mounted at {point}")
            if dev["name"] in swapped:
                found.append(f"{dev['name']} is in use as swap")
            walk(dev.get("children") or [])

    walk(json.loads(lsblk_json).get("blockdevices") or [])
    return found


def check_device(device: str, force: bool, needed: "callable") -> int:
    """Refuse what must not be written; return the device's size in bytes."""
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError:
        raise CosError(f"{device}: no such device") from None
    if not stat.S_ISBLK(mode):
        raise CosError(f"{device}: not a block device")
    listing = run(["lsblk", "-J", "-p", "-o", "NAME,MOUNTPOINTS", device], what=f"lsblk {device}")
    swaps = Path("/proc/swaps").read_text() if Path("/proc/swaps").exists() else ""
    users = users_in(listing, swaps)
    running = [u for u in users if u.endswith((" at /", f" at {BOOTED}"))]
    if running:
        raise CosError(f"{device}: holds the running system ({'; '.join(running)})")
    if users:
        raise CosError(f"{device}: in use: {'; '.join(users)}")
    size = device_size(device)
    needed(size)
    content = existing_content(device)
    if content and not force:
        raise CosError(f"{device}: holds {content}; use --force to overwrite it")
    return size


# ---------------------------------------------------------------- the source


def image_mib(path: Path) -> int:
    return -(-path.stat().st_size // layout.MiB)


def booted() -> dict[str, str]:
    return slots.current_boot()


def layer_records(path: Path) -> list[dict] | None:
    """The records of a N.layers.json (or the ISO's system.layers.json), if there is one."""
    return read_json(path).get("layers") if path.is_file() else None


def local_source(steps: Progress) -> Source:
    boot = booted()
    kind = boot.get("slot", "")
    if kind == "live":
        live_recovery = BOOTED / "cOS/recovery.img"
        info = read_json(BOOTED / "cOS/system.json")
        system = BOOTED / "cOS/system.img"
        source = Source("the live system", live_recovery, {**info, "source": "installer ISO"})
        # The ISO's system and recovery image are one build's rootfs: the same layers.
        records = layer_records(BOOTED / "cOS/system.layers.json")
        source.recovery_records = source.slot_records = records
        if system.is_file():
            source.slot_image = system
            source.slot_info = {**info, "source": "installer ISO"}
        else:
            source.tree_image = live_recovery
        return finish_source(source, steps)
    if kind == "recovery":
        image = BOOTED / boot.get("image", "").lstrip("/")
        info = read_json(recovery.info_path(image))
        source = Source("the recovery system", image, info, tree_image=image)
        source.recovery_records = layer_records(recovery.layers_path(image))
        source.slot_records = source.recovery_records
        return finish_source(source, steps)
    if kind in ("active", "passive"):
        image = BOOTED / boot.get("image", "").lstrip("/")
        name = slots.booted_name(boot)
        info = read_json(slots.info_path(BOOTED, name)) if name else {}
        source = copy_of_recovery(f"the {kind} system ({image.name})")
        source.slot_image = image
        source.slot_info = info
        source.slot_records = layer_records(slots.layers_path(BOOTED, name)) if name else None
        return finish_source(source, steps)
    raise CosError(
        "cannot tell which system is running (no /run/cos/boot): use --image REF, or run "
        "from the installer ISO or a cOS machine"
    )


def copy_of_recovery(describe: str) -> Source:
    """A source with COS_RECOVERY's image, copied to /run (the partition is unmounted
    again) with what it holds."""
    from cos.partitions import mounted

    WORK.mkdir(parents=True, exist_ok=True)
    target = WORK / "recovery.img"
    with mounted("COS_RECOVERY") as root:
        image = recovery.current_image(root)
        shutil.copyfile(image, target)
        source = Source(describe, target, read_json(recovery.info_path(image)))
        source.recovery_records = layer_records(recovery.layers_path(image))
    return source


def finish_source(source: Source, steps: Progress) -> Source:
    if not source.recovery_image.is_file():
        raise CosError(f"{source.recovery_image}: missing; no recovery image to install")
    if source.slot_image is not None:
        source.slot_mib = image_mib(source.slot_image)
    elif source.tree_image is not None:
        with steps.step(f"measuring the system in {source.tree_image}"):
            with loop_mounted(source.tree_image, WORK / "tree") as tree:
                source.slot_mib = layout.slot_size_mib(tree)
        source.slot_info = {**source.recovery_info, "source": f"made from {source.tree_image}"}
    return source


def image_source(reference: str, verify: bool, steps: Progress) -> Source:
    """An OCI image, resolved and checked exactly as `cos upgrade` does; the recovery image
    is the running system's."""
    from cos import upgrade

    plan = upgrade.resolve_verified(reference, verify, steps)
    label = str(plan.labels.get(upgrade.SLOT_SIZE_LABEL, ""))
    if not label.isdigit():
        raise CosError(
            f"{reference}: no {upgrade.SLOT_SIZE_LABEL} label: cannot size the slot; "
            "install a cOS image built by this project"
        )
    local = local_source(steps) if booted().get("slot") else None
    if local is None:
        raise CosError("no recovery image on this system to install beside the image")
    source = Source(
        f"{plan.repository}@{plan.digest}", local.recovery_image, local.recovery_info, plan=plan
    )
    source.recovery_records = local.recovery_records
    source.slot_mib = -(-int(label) // layout.MiB)
    source.slot_info = upgrade.slot_facts(plan, FIRST_ACTIVE)
    return source


# ---------------------------------------------------------------- writing


@contextmanager
def loop_mounted(image: Path, target: Path) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", "-o", "loop,ro", str(image), str(target)], what=f"mounting {image}")
    try:
        yield target
    finally:
        run(["umount", str(target)], what=f"unmounting {image}")


@contextmanager
def mounted_partition(dev: str, label: str) -> Iterator[Path]:
    target = WORK / label.lower()
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", dev, str(target)], what=f"mounting {label} ({dev})")
    try:
        yield target
        run(["sync", "-f", str(target)], what=f"syncing {label}")
    finally:
        run(["umount", str(target)], what=f"unmounting {label} ({dev})")


@contextmanager
def locked_disk(device: str) -> Iterator[None]:
    """systemd's block device locking: while a BSD lock on the whole disk is held, udev
    defers probing it and does not re-read its partition table when a writer closes it
    (a re-read removes and re-adds every partition node, under mke2fs or mount)."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def partition_devices(device: str, count: int) -> list[str]:
    """/dev paths of the device's partitions 1..count, once the kernel shows them. The
    nodes come from devtmpfs as sfdisk re-reads the table. The disk is locked
    (locked_disk), so udev cannot take them away again; nothing here needs udev's links,
    and `udevadm settle` would wait for its whole queue, which on a live system still
    booting took up to 13 s on aarch64."""
    name = Path(os.path.realpath(device)).name
    found: dict[int, str] = {}
    deadline = time.monotonic() + 30
    while True:
        for entry in Path("/sys/class/block", name).iterdir():
            try:
                found[int((entry / "partition").read_text())] = f"/dev/{entry.name}"
            except (FileNotFoundError, NotADirectoryError):
                continue  # not a partition, or gone while being listed
        wanted = [found.get(i) for i in range(1, count + 1)]
        if all(wanted) and all(Path(p).exists() for p in wanted):
            return wanted
        if time.monotonic() > deadline:
            raise CosError(f"{device}: the kernel shows partitions {sorted(found)} of 1-{count}")
        time.sleep(0.2)


def write_partition_table(device: str, parts: list[layout.Partition]) -> dict[str, str]:
    run(["wipefs", "--all", "--quiet", device], what=f"wiping the signatures on {device}")
    run(
        ["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always", device],
        what=f"writing the partition table of {device}",
        input=layout.partition_table(parts).encode(),
    )
    devices = partition_devices(device, len(parts))
    by_label = {part.label: dev for part, dev in zip(parts, devices, strict=True)}
    # An ESP left by an earlier system must not boot a half-written disk.
    run(["wipefs", "--all", "--quiet", by_label["COS_GRUB"]], what="wiping COS_GRUB")
    return by_label


def make_ext4(dev: str, label: str) -> None:
    run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-m", "0", "-E", "nodiscard", dev],
        what=f"making {label} on {dev}",
    )


def copy_file(source: Path, target: Path) -> None:
    run(["cp", "--sparse=always", str(source), str(target)], what=f"copying {source}")
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


def write_slots(root: Path, source: Source, steps: Progress) -> None:
    """Slots 2 (active) and 1 (passive, a hard link of 2) and the pointer, as slots.py
    documents."""
    (root / slots.SLOTS).mkdir(parents=True)
    active = slots.image_path(root, FIRST_ACTIVE)
    if source.slot_image is not None:
        with steps.step(f"copying the system ({source.slot_mib} MiB) to slot {FIRST_ACTIVE}"):
            copy_file(source.slot_image, active)
    elif source.tree_image is not None:
        with steps.step(f"making slot {FIRST_ACTIVE} from {source.tree_image}"):
            make_slot_from_tree(source.tree_image, active, source.slot_mib)
    else:
        source.slot_records = pull_slot(source, root, FIRST_ACTIVE, steps)
    os.link(active, slots.image_path(root, FIRST_PASSIVE))
    record_slots(root, source, (FIRST_ACTIVE, FIRST_PASSIVE))
    slots.write_pointer(root, slots.Pointer(active=FIRST_ACTIVE, passive=FIRST_PASSIVE))


def pull_slot(source: Source, root: Path, name: str, steps: Progress) -> list[dict]:
    """Slot `name` written from the source's OCI image, as `cos upgrade` writes one (from
    scratch: nothing on this disk to start from); the records of its layers."""
    from cos import upgrade

    with steps.step(f"pulling {source.describe} into slot {name}"):
        return upgrade.write_slot(
            source.plan, root, name, source.slot_mib * layout.MiB, steps, None, upgrade.Start()
        )


def record_slots(root: Path, source: Source, names: tuple[str, ...]) -> None:
    """What each of the slots holds (N.json) and, when known, what its layers wrote."""
    written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name in names:
        write_json(
            slots.info_path(root, name), {**source.slot_info, "name": name, "written": written}
        )
        if source.slot_records is not None:
            write_json(slots.layers_path(root, name), {"layers": source.slot_records})
    fsync_dir(root / slots.SLOTS)


def make_slot_from_tree(squashfs: Path, target: Path, size_mib: int) -> None:
    """An ext4 slot image (no journal, as the build makes) holding the squashfs's tree."""
    partial = target.with_name(f".{target.name}.new")
    with loop_mounted(squashfs, WORK / "tree") as tree:
        run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "COS_SYSTEM", "-O", "^has_journal",
             "-m", "0", "-E", "root_owner=0:0", "-d", str(tree), str(partial), f"{size_mib}M"],
            what=f"making a slot from {squashfs}",
        )  # fmt: skip
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.rename(partial, target)


def write_recovery(root: Path, source: Source, steps: Progress) -> None:
    mib = image_mib(source.recovery_image)
    with steps.step(f"copying the recovery image ({mib} MiB)"):
        with recovery.new_image(root, source.recovery_info, source.recovery_records) as partial:
            copy_file(source.recovery_image, partial)


def read_config(config: str) -> bytes:
    """The install config: a file, or an http(s) URL."""
    if config.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(config, timeout=60) as response:
                return response.read()
        except OSError as exc:
            raise CosError(f"{config}: cannot fetch the config: {exc}") from None
    try:
        return Path(config).read_bytes()
    except OSError as exc:
        raise CosError(f"{config}: cannot read the config: {exc.strerror}") from None


def check_config(data: bytes, origin: str) -> None:
    import yaml

    try:
        value = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise CosError(f"{origin}:{line} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if value is not None and not isinstance(value, dict):
        raise CosError(f"{origin}: a cloud-config must be a mapping")


def write_esp(dev: str, steps: Progress) -> None:
    """Last: GRUB at the removable-media path (no NVRAM entry needed), its menu, grubenv."""
    arch = bootloader.efi_arch(os.uname().machine)
    with steps.step("writing COS_GRUB (GRUB, its menu and grubenv)"):
        run(["mkfs.vfat", "-F", "32", "-s", "1", "-n", "COS_GRUB", dev], what=f"mkfs.vfat on {dev}")
        with tempfile.TemporaryDirectory(dir="/run") as tmp:
            early = Path(tmp) / "early.cfg"
            early.write_text(
                bootloader.embedded_config((ROOT / bootloader.GRUB_SHARE / "early.cfg").read_text())
            )
            efi = Path(tmp) / arch.boot_file
            run(
                bootloader.mkimage_command(ROOT, arch.platform, arch.package, efi, early),
                what=f"grub-mkimage for {arch.platform}",
            )
            with mounted_partition(dev, "COS_GRUB") as esp:
                (esp / "EFI/BOOT").mkdir(parents=True)
                (esp / "EFI/cos").mkdir(parents=True)
                shutil.copyfile(efi, esp / "EFI/BOOT" / arch.boot_file)
                shutil.copyfile(ROOT / bootloader.GRUB_SHARE / "grub.cfg", esp / "EFI/cos/grub.cfg")
                grubenv.create(esp / slots.GRUBENV, {})
    add_nvram_entry(dev, arch, steps)


NVRAM_LABEL = "cOS"
BOOT_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})\*? (.*?)(?:\t|$)", re.MULTILINE)


def nvram_entries_named(efibootmgr_output: str, label: str) -> list[str]:
    """The numbers of the firmware's boot entries called `label`."""
    return [num for num, name in BOOT_ENTRY.findall(efibootmgr_output) if name.strip() == label]


def add_nvram_entry(dev: str, arch: bootloader.EfiArch, steps: Progress) -> None:
    """A boot entry in the firmware too, when it can be written (not needed: the
    removable-media path boots without one). Entries of an earlier install are replaced,
    as grub-install replaces its own: they point at partitions that are gone."""
    efivars = Path("/sys/firmware/efi/efivars")
    if not efivars.is_dir() or shutil.which("efibootmgr") is None:
        steps.say("no NVRAM entry (no efibootmgr or efivars); the removable-media path boots")
        return
    disk = Path(os.path.realpath(dev)).name
    parent = Path(os.path.realpath(f"/sys/class/block/{disk}")).parent.name
    number = Path(f"/sys/class/block/{disk}/partition").read_text().strip()
    listing = subprocess.run(["efibootmgr"], capture_output=True, text=True, check=False)
    for old in nvram_entries_named(listing.stdout, NVRAM_LABEL):
        subprocess.run(["efibootmgr", "-q", "-b", old, "-B"], capture_output=True, check=False)
    result = subprocess.run(
        ["efibootmgr", "-q", "-c", "-d", f"/dev/{parent}", "-p", number, "-L", NVRAM_LABEL,
         "-l", f"\\EFI\\BOOT\\{arch.boot_file}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    steps.say(
        f"NVRAM entry {NVRAM_LABEL} added"
        if result.returncode == 0
        else f"no NVRAM entry ({result.stderr.strip()}); the removable-media path boots"
    )


# ---------------------------------------------------------------- the verb


def install(
    device: str,
    image: str | None = None,
    config: str | None = None,
    persistent_mib: int | None = None,
    recovery_mib: int | None = None,
    verify: bool = True,
    force: bool = False,
    steps: Progress | None = None,
) -> str:
    steps = steps or Progress()
    config_data = None
    if config is not None:
        config_data = read_config(config)
        check_config(config_data, config)
    # Cheap refusals first, then the source (an image pull checks its signature here).
    check_device(device, force, needed=lambda size: None)
    source = image_source(image, verify, steps) if image else local_source(steps)
    recovery_image_mib = image_mib(source.recovery_image)
    parts: list[layout.Partition] = []

    def needed(size: int) -> None:
        parts[:] = layout.plan_for_disk(
            device, size, source.slot_mib, recovery_image_mib, persistent_mib, recovery_mib
        )

    check_device(device, force, needed)
    steps.say(f"installing {source.describe} to {device}: " + describe_plan(parts))
    # The install config's own before-/after-install steps run too, not only at boots.
    hooks: tuple[Path, ...] = ()
    if config_data is not None:
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / INSTALL_CONFIG).write_bytes(config_data)
        hooks = (WORK / INSTALL_CONFIG,)
    run_stage("before-install", steps, files=hooks)
    # udev neither probes the disk nor re-reads its partition table while this is held
    with locked_disk(device):
        with steps.step(f"partitioning {device}"):
            by_label = write_partition_table(device, parts)
        with steps.step("making the file systems"):
            for label in ("COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT"):
                make_ext4(by_label[label], label)
        with mounted_partition(by_label["COS_STATE"], "COS_STATE") as root:
            write_slots(root, source, steps)
        with mounted_partition(by_label["COS_RECOVERY"], "COS_RECOVERY") as root:
            write_recovery(root, source, steps)
        with mounted_partition(by_label["COS_OEM"], "COS_OEM") as root:
            if config_data is not None:
                (root / INSTALL_CONFIG).write_bytes(config_data)
                steps.say(f"install config stored as COS_OEM:/{INSTALL_CONFIG}")
        with (
            mounted_partition(by_label["COS_STATE"], "COS_STATE") as state,
            mounted_partition(by_label["COS_OEM"], "COS_OEM") as oem,
            mounted_partition(by_label["COS_PERSISTENT"], "COS_PERSISTENT") as persistent,
            target_root(slots.image_path(state, FIRST_ACTIVE), oem, persistent) as root,
        ):
            run_stage("after-install", steps, root=root, files=hooks)
        write_esp(by_label["COS_GRUB"], steps)  # last: a disk GRUB boots is a whole one
    took = time.monotonic() - steps.started
    return f"{device}: cOS installed in {took:.1f} s; remove the installer medium and reboot"


def describe_plan(parts: list[layout.Partition]) -> str:
    return ", ".join(f"{p.label} {layout.format_mib(p.size_mib)}" for p in parts)
