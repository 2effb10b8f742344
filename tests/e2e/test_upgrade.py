"""`cos upgrade` on a real machine from the session's registry: v1 -> v2 and back by
`cos rollback`, refused images that change nothing, and new systems that fail their trial
boot (a kernel panic, a failed health check) left by the machine on its own. The images
are the built one plus one layer (toolkit/testimages.py)."""

import json
import re

import pytest

from toolkit import testimages
from toolkit.arch import get_arch
from toolkit.build import ImageBuild, image_folder
from toolkit.flavors import load_flavor

pytestmark = pytest.mark.vm

GUEST_REGISTRY = "10.0.2.100:5000"  # the session registry, as QEMU's guest forward shows it
UPGRADE_TIMEOUT = 300  # KVM seconds, scaled by the harness


@pytest.fixture(scope="module")
def built(vm_settings, vm_arch) -> ImageBuild:
    flavor = load_flavor(vm_settings.flavor)
    image = ImageBuild(flavor, get_arch(vm_arch), image_folder(flavor.name, vm_arch))
    if not image.oci_layout.is_dir():
        pytest.fail(f"image not built: {image.oci_layout}; run `invoke build`")
    return image


@pytest.fixture(scope="module")
def images(registry, built) -> dict[str, str]:
    """variant -> the reference a machine pulls it by."""
    published = testimages.publish(built, registry, seen_as=GUEST_REGISTRY, log=lambda _: None)
    return {k: v.reference.replace(registry, GUEST_REGISTRY) for k, v in published.items()}


def status(m) -> dict:
    return json.loads(m.succeed("cos status --json"))


def booted_image(m) -> str:
    return dict(line.split("=", 1) for line in m.succeed("cat /run/cos/boot").split())["image"]


def slot_files(m) -> str:
    return m.succeed("cat /run/cos/state/cOS/state.env | tr -d '#'; ls /run/cos/state/cOS/slots")


def upgrade(m, reference: str, *flags: str) -> str:
    return m.succeed(f"cos upgrade --image {reference} {' '.join(flags)}", UPGRADE_TIMEOUT)


@pytest.mark.parametrize(
    ("variant", "reason"),
    [("unsigned", "unsigned: .* has no signature"), ("other-key", "wrongly signed")],
)
def test_refused_images_leave_the_slots_as_they_were(shared_machine, images, variant, reason):
    m = shared_machine
    before = slot_files(m)
    out = m.fail(f"cos upgrade --image {images[variant]}", UPGRADE_TIMEOUT)
    assert re.search(reason, out), out
    assert slot_files(m) == before
    assert "cos_tentative" not in status(m)["grubenv"]


# Upgrade hooks: before-upgrade acts on the running system, after-upgrade on the new one
# (its root is the new slot; /usr/local is the machine's, where what it writes lasts).
UPGRADE_HOOKS = """\
stages:
  before-upgrade:
    - commands: ["cp /etc/os-release /usr/local/before-upgrade-saw"]
  after-upgrade:
    - commands: ["cat /usr/share/cos/test-variant > /usr/local/after-upgrade-saw"]
"""


def test_upgrade_to_v2_then_rollback_to_v1(machine, images, built):
    m = machine
    m.succeed("echo kept > /usr/local/marker && mkdir -p /root/data && echo kept > /root/data/f")
    m.succeed(f"cat > /oem/80_upgrade_hooks.yaml <<'EOF'\n{UPGRADE_HOOKS}EOF")
    out = upgrade(m, images["v2"])
    assert "slot 3 holds" in out
    assert m.succeed("cat /usr/local/after-upgrade-saw").strip() == "v2"
    assert "IMAGE_VERSION" in m.succeed("cat /usr/local/before-upgrade-saw")
    m.fail("test -e /usr/share/cos/test-variant")  # the hook did not touch the running system
    after = status(m)
    assert after["slots"]["active"]["name"] == "3" and after["slots"]["passive"]["name"] == "2"
    assert after["slots"]["active"]["version"] == testimages.next_version(built.flavor.version)
    assert after["assessment"].startswith("slot 3 on trial")
    m.reboot()
    assert booted_image(m) == "/cOS/slots/3.img"
    assert m.succeed("cat /usr/share/cos/test-variant").strip() == "v2"
    m.wait_for_unit("cos-boot-assessment.service")
    assert status(m)["assessment"] == "good"
    assert status(m)["version"] == testimages.next_version(built.flavor.version)
    assert m.succeed("cat /usr/local/marker /root/data/f").split() == ["kept", "kept"]
    # The way back: a lasting switch to the previous system.
    m.succeed("cos rollback")
    m.reboot()
    assert booted_image(m) == "/cOS/slots/2.img"
    assert status(m)["version"] == built.flavor.version
    assert m.succeed("cat /usr/local/marker /root/data/f").split() == ["kept", "kept"]
    m.reboot()
    assert booted_image(m) == "/cOS/slots/2.img"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("panic", "did not reach the assessment"),
        ("unhealthy", "health check failed: 90-unhealthy"),
        ("hang", "the boot did not finish within 60 s"),
    ],
)
def test_a_new_system_that_fails_its_trial_is_left_by_itself(machine, images, variant, reason):
    m = machine
    upgrade(m, images[variant])
    # The trial boot panics or reboots itself after its checks; GRUB then boots slot 2.
    m.reboot(check_health=False, fail_fast=False, timeout=240)
    m.wait_until_succeeds("grep -q image=/cOS/slots/2.img /run/cos/boot", timeout=240)
    m.wait_for_unit("cos-boot-assessment.service")
    after = status(m)
    assert after["slots"]["active"]["name"] == "2" and after["slots"]["passive"]["name"] == "3"
    assert after["last_rollback"]["reason"] == reason
    assert after["assessment"] == "good"
    m.reboot()  # and it lasts
    assert booted_image(m) == "/cOS/slots/2.img"


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["writing the slot", "after the switch", "in the trial boot"])
def test_a_power_cut_during_an_upgrade_leaves_a_machine_that_boots_and_upgrades(
    machine, images, moment
):
    m = machine
    if moment == "writing the slot":
        m.succeed(f"setsid cos upgrade --image {images['v2']} >/run/upgrade.log 2>&1 </dev/null &")
        m.wait_until_succeeds("grep -q 'copying 2.img' /run/upgrade.log", timeout=UPGRADE_TIMEOUT)
        m.power_cut()
        expected = "/cOS/slots/2.img"  # the old system: nothing was switched
    elif moment == "after the switch":
        upgrade(m, images["v2"])
        m.power_cut()
        expected = "/cOS/slots/3.img"  # the new system, on trial
    else:
        upgrade(m, images["v2"])
        mark = m.console_mark()
        m.execute("systemctl --no-block reboot")
        m.wait_for_console(r"Linux version", since=mark, timeout=120)
        m.power_cut()
        expected = "/cOS/slots/2.img"  # the trial never ended: GRUB falls back
    m.start()
    assert booted_image(m) == expected
    m.wait_for_unit("cos-boot-assessment.service")
    after = status(m)
    assert after["assessment"] == "good" and after["booted"] == "active"
    if moment == "in the trial boot":
        assert after["last_rollback"]["reason"] == "did not reach the assessment"
    # A second upgrade cleans up whatever the first left and succeeds.
    assert "holds" in upgrade(m, images["v2"])
    now = status(m)["slots"]
    assert now["passive"]["name"] == after["slots"]["active"]["name"]
    names = m.succeed("ls -A /run/cos/state/cOS/slots").split()
    # only the two slots and what is recorded of them: no leftovers
    assert {n.split(".")[0] for n in names} == {now["active"]["name"], now["passive"]["name"]}
