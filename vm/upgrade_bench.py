"""`invoke bench`'s upgrade figures: a machine booted from the built disk upgrades to the
test image v2 (toolkit/testimages.py) from a registry of its own, then reboots into it."""

import json
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from toolkit import testimages
from toolkit.arch import get_arch
from toolkit.build import ImageBuild, image_folder
from toolkit.flavors import load_flavor
from toolkit.paths import build_dir
from toolkit.registry import start_registry, stop_registry
from vm.images import built_disk
from vm.machine import Machine, MachineOptions
from vm.ports import allocate_port

GUEST_REGISTRY = "10.0.2.100:5000"  # the registry as the guest forward shows it


def quiet(_line: str) -> None:
    pass


def upgrade_figures(flavor: str, arch: str) -> dict[str, float]:
    image = ImageBuild(load_flavor(flavor), get_arch(arch), image_folder(flavor, arch))

    def publish_v2(address: str) -> str:
        published = testimages.publish(image, address, seen_as=GUEST_REGISTRY, log=quiet)
        return published["v2"].reference

    return upgrade_to(flavor, arch, publish_v2)


# publish(registry address) -> the reference, under that address, a machine upgrades to
Publish = Callable[[str], str]


def upgrade_to(flavor: str, arch: str, publish: Publish) -> dict[str, float]:
    """A machine booted from the built disk of `flavor` upgrades to what `publish` pushed
    to a registry of its own, then reboots into it: seconds and bytes."""
    lease = allocate_port()
    with tempfile.TemporaryDirectory(dir=build_dir()) as tmp:
        storage = Path(tmp) / "registry"
        address = start_registry(storage, lease.port, log=quiet)
        try:
            v2 = publish(address)
            options = MachineOptions(
                arch=arch, image=built_disk(flavor, arch), registry_port=lease.port
            )
            with Machine(f"bench-upgrade-{secrets.token_hex(3)}", options) as machine:
                machine.start()
                started = time.monotonic()
                machine.succeed(f"cos upgrade --image {v2.replace(address, GUEST_REGISTRY)}", 600)
                upgraded = time.monotonic() - started
                facts = json.loads(machine.succeed("cos status --json"))["last_upgrade"]
                started = time.monotonic()
                machine.reboot()
                rebooted = time.monotonic() - started
        finally:
            stop_registry(storage, log=quiet)
            lease.release()
    pulled, _, total = facts["pulled"].partition(" of ")
    return {
        "upgrade": upgraded,
        "reboot": rebooted,
        "pulled": int(pulled),
        "image": int(total.split()[0]),
    }


def report_upgrade(flavor: str, arch: str, log: Callable[[str], None] = print) -> None:
    figures = upgrade_figures(flavor, arch)
    log(f"{arch} upgrade to v2 (the built image plus one layer)")
    log(f"  cos upgrade to switched slot   {figures['upgrade']:6.1f} s")
    log(f"  reboot to SSH on the new slot  {figures['reboot']:6.1f} s")
    share = 100 * figures["pulled"] / figures["image"]
    log(
        f"  pulled {figures['pulled'] / 1e6:.2f} MB of the image's "
        f"{figures['image'] / 1e6:.1f} MB ({share:.1f} %)"
    )
