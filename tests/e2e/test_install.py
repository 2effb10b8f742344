"""A machine's beginning and its way back: `cos install` from the installer ISO to a blank
disk (typed, and unattended from the NoCloud user-data) or of a registry image, its
refusals, `cos reset` from the recovery system, and `cos upgrade --recovery`."""

import json
import re
import time

import pytest

# The registry's test images, as the upgrade scenarios publish them (fixtures)
from tests.e2e.test_upgrade import UPGRADE_TIMEOUT, built, images  # noqa: F401
from toolkit import testimages
from vm.images import installer_iso

pytestmark = pytest.mark.vm

INSTALL_TIMEOUT = 300  # KVM seconds, scaled by the harness

# The harness's seed sets the hostname at the boot stage (cidata comes after /oem), so the
# install config sets its hostname at the later network stage.
INSTALL_CONFIG = """\
#cloud-config
users:
  - name: alice
    shell: /bin/bash
write_files:
  - path: /etc/cos-installed-by
    content: "cos install --config\\n"
stages:
  network:
    - hostname: installed-host
  before-install:
    - commands: ["touch /run/cos-before-install-ran"]
  after-install:
    - name: acts on the installed system, lasting where it can
      commands:
        - "grep -q ^VARIANT_ID= /etc/os-release && touch /usr/local/after-install-saw-the-target"
      files:
        - path: /oem/91_from_after_install.yaml
          content: "stages: {boot: [{files: [{path: /etc/from-after-install, content: hook}]}]}"
"""


def status(m) -> dict:
    return json.loads(m.succeed("cos status --json"))


def booted(m) -> dict:
    return dict(line.split("=", 1) for line in m.succeed("cat /run/cos/boot").split())


def assert_installed_system(m) -> None:
    """Booted from the disk's active slot 2, with slot 1 passive and the recovery image."""
    boot = booted(m)
    assert boot == {"slot": "active", "image": "/cOS/slots/2.img", "label": "COS_STATE"}, boot
    source = m.succeed("findmnt -n -o SOURCE /run/cos/state").strip()
    assert source.startswith("/dev/vda"), source
    found = status(m)
    assert found["booted"] == "active"
    slots = found["slots"]
    assert (slots["active"]["name"], slots["passive"]["name"]) == ("2", "1")
    for info in (slots["active"], slots["passive"], found["recovery"]):
        assert info["version"] == found["version"] and info["flavor"] == found["flavor"], info
    assert found["recovery"].get("manifest", "").startswith("sha256:"), found["recovery"]
    assert found["recovery"]["name"] == "1"
    # What the layers wrote goes with the slots, so the first upgrade pulls only what is new
    records = json.loads(m.succeed("cat /run/cos/state/cOS/slots/2.layers.json"))["layers"]
    assert [r["digest"] for r in records] == slots["active"]["layers"][1:], records
    assert found["assessment"] == "good"
    labels = m.succeed("lsblk -n -o PARTLABEL /dev/vda").split()
    assert labels == ["COS_GRUB", "COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT"]
    assert "/EFI/BOOT/BOOT" in m.succeed(
        "mount -o ro LABEL=COS_GRUB /mnt && find /mnt -type f; umount /mnt"
    )
    # The firmware booted the entry `cos install` wrote to its NVRAM
    entries = m.succeed("efibootmgr")
    current = re.search(r"^BootCurrent: (\w+)", entries, re.MULTILINE)
    assert current and re.search(rf"^Boot{current[1]}\*? cOS\b", entries, re.MULTILINE), entries


def test_install_refuses_a_disk_in_use_or_too_small(vm_settings, vm_arch, machine_factory):
    """From the live ISO, with a 1 GiB disk: the CD it runs from, a mounted disk and a
    disk too small are refused with the reason, and nothing is written."""
    m = machine_factory(image=None, iso=installer_iso(vm_settings.flavor, vm_arch), disk_size="1G")
    out = m.fail("cos install /dev/sr0 2>&1")
    assert "/dev/sr0: holds the running system" in out, out
    out = m.fail("cos install /dev/vda 2>&1")
    assert "/dev/vda: too small: 1024 MiB, and this system needs at least" in out, out
    m.succeed("mkfs.ext4 -q -L DATA /dev/vda && mkdir -p /run/data && mount /dev/vda /run/data")
    out = m.fail("cos install --force /dev/vda 2>&1")
    assert "/dev/vda: in use: /dev/vda is mounted at /run/data" in out, out
    m.succeed("umount /run/data")
    out = m.fail("cos install --config /nonexistent.yaml /dev/vda 2>&1")
    assert "/nonexistent.yaml: cannot read the config" in out, out
    # Nothing was written: the file system made above is still the only thing on the disk
    assert m.succeed("blkid -p -o value -s LABEL /dev/vda").strip() == "DATA"
    assert m.execute("sfdisk -d /dev/vda")[0] != 0


@pytest.mark.slow
def test_install_from_the_iso_then_boot_the_disk(installer_machine):
    m = installer_machine
    m.succeed(f"cat > /tmp/config.yaml <<'EOF'\n{INSTALL_CONFIG}EOF")
    out = m.succeed("cos install /dev/vda --config /tmp/config.yaml 2>&1", INSTALL_TIMEOUT)
    print(out)
    for step in ("partitioning /dev/vda", "copying the system", "copying the recovery image",
                 "writing COS_GRUB", "cOS installed in"):  # fmt: skip
        assert step in out, (step, out)
    # A second run on the written disk is refused without --force
    assert "holds a partition table (gpt); use --force" in m.fail("cos install /dev/vda 2>&1")
    m.succeed("test -e /run/cos-before-install-ran")  # the config's before-install step
    m.fail("test -e /usr/local/after-install-saw-the-target")  # not the live system's
    m.reboot(timeout=INSTALL_TIMEOUT)
    assert_installed_system(m)
    # The install config on COS_OEM ran at boot: the user, the file, the hostname
    assert m.succeed("cat /oem/90_install.yaml") == INSTALL_CONFIG
    assert m.succeed("getent passwd alice").split(":")[6].strip() == "/bin/bash"
    assert m.succeed("cat /etc/cos-installed-by") == "cos install --config\n"
    assert m.succeed("hostname").strip() == "installed-host"
    # The after-install step wrote to the target's COS_PERSISTENT and COS_OEM
    m.succeed("test -e /usr/local/after-install-saw-the-target")
    assert m.succeed("cat /etc/from-after-install") == "hook"
    # COS_PERSISTENT grew to the rest of the 8 GiB disk
    size = int(m.succeed("blockdev --getsize64 /dev/disk/by-label/COS_PERSISTENT"))
    assert size > 5 << 30, size


@pytest.mark.slow
def test_unattended_install_from_user_data(vm_settings, vm_arch, machine_factory):
    """Nobody types: the ISO's live system reads `install:` from the NoCloud user-data,
    installs to /dev/vda and reboots; the first SSH login is on the installed system."""
    began = time.monotonic()
    m = machine_factory(
        image=None,
        iso=installer_iso(vm_settings.flavor, vm_arch),
        disk_size="8G",
        cloud_config={"install": {"device": "/dev/vda", "after": "reboot"}},
        timeout=INSTALL_TIMEOUT,
    )
    seconds = time.monotonic() - began
    print(f"ISO boot to SSH on the installed disk ({vm_arch}): {seconds:.1f} s")
    print(f"last boot's phases (s): {m.boot_timings}; emulator retries {m.emulator_retries}")
    assert_installed_system(m)
    journal = m.succeed("journalctl -b -1 -u cos-autoinstall.service -o cat || true")
    console = m.console_path.read_text(errors="replace")
    assert "cOS installed in" in console or "cOS installed in" in journal
    print("\n".join(line for line in console.splitlines() if "] " in line and " s]" in line))


@pytest.mark.slow
def test_reset_from_recovery_keeps_then_wipes_persistent_data(machine):
    m = machine
    m.succeed("echo kept > /usr/local/data && echo kept > /root/data")
    m.succeed(
        "cat > /oem/90_marker.yaml <<'EOF'\n#cloud-config\nwrite_files:\n"
        "  - path: /etc/oem-marker\n    content: from COS_OEM\nEOF"
    )
    refused = m.fail("cos reset 2>&1")
    assert "cos reset runs only from the recovery system; this is the active" in refused
    before = status(m)["slots"]["active"]["name"]

    def to_recovery():
        m.succeed("cos rollback --recovery")
        m.reboot()
        assert booted(m)["slot"] == "recovery"
        assert "COS_RECOVERY" in m.succeed("blkid -o value -s LABEL $(findmnt -n -o SOURCE "
                                           "/run/cos/state)")  # fmt: skip

    to_recovery()
    assert "recovery" in status(m)
    out = m.succeed("cos reset 2>&1", INSTALL_TIMEOUT)
    print(out)
    assert "kept: COS_PERSISTENT, COS_OEM" in out, out
    m.reboot()
    assert booted(m)["slot"] == "active"
    found = status(m)
    assert found["slots"]["active"]["name"] not in (before, "1", "2"), found["slots"]
    assert found["last_reset"]["wiped"] == "nothing"
    assert found["assessment"] == "good"
    assert m.succeed("cat /usr/local/data /root/data") == "kept\nkept\n"
    assert m.succeed("cat /etc/oem-marker").strip() == "from COS_OEM"

    to_recovery()
    out = m.succeed("cos reset --wipe-persistent 2>&1", INSTALL_TIMEOUT)
    assert "wiping COS_PERSISTENT" in out and "kept: COS_OEM" in out, out
    m.reboot()
    assert booted(m)["slot"] == "active"
    assert m.execute("test -e /usr/local/data")[0] != 0
    assert m.execute("test -e /root/data")[0] != 0
    assert m.succeed("cat /etc/oem-marker").strip() == "from COS_OEM"
    assert status(m)["last_reset"]["wiped"] == "persistent"


@pytest.mark.slow
def test_install_from_a_running_machine_to_a_second_disk(machine_factory):
    """From an installed machine's active slot to a blank second disk (vdb): the running
    disk is refused, the new disk gets the booted slot and COS_RECOVERY's image. (Not
    rebooted: two disks with the same labels would leave the choice to the firmware.)"""
    m = machine_factory(blank_disk="4G")
    assert "/dev/vda: holds the running system" in m.fail("cos install --force /dev/vda 2>&1")
    out = m.succeed("cos install /dev/vdb 2>&1", INSTALL_TIMEOUT)
    assert "installing the active system (2.img) to /dev/vdb" in out, out
    m.succeed("mkdir -p /run/check && mount -o ro /dev/vdb4 /run/check")
    assert m.succeed("cmp /run/check/cOS/slots/2.img /run/cos/state/cOS/slots/2.img && echo same")
    assert m.succeed("stat -c %h /run/check/cOS/slots/1.img").strip() == "2"  # one copy
    written, running = (
        json.loads(m.succeed(f"cat {root}/cOS/slots/2.layers.json"))
        for root in ("/run/check", "/run/cos/state")
    )
    assert written == running and written["layers"], (written, running)
    m.succeed("umount /run/check")
    for disk in ("vda", "vdb"):  # COS_RECOVERY is partition 3 on both
        m.succeed(f"mkdir -p /run/{disk} && mount -o ro /dev/{disk}3 /run/{disk}")
    assert m.succeed("cmp /run/vda/cOS/recovery/1.img /run/vdb/cOS/recovery/1.img && echo same")
    m.succeed("umount /run/vda /run/vdb")


@pytest.mark.slow
def test_install_an_image_from_the_registry_to_a_second_disk(machine_factory, images, built):  # noqa: F811
    """`cos install --image REF`: the image is pulled by digest and verified, written as the
    slot with what its layers wrote; the recovery image is the running machine's."""
    m = machine_factory(blank_disk="4G")
    out = m.succeed(f"cos install /dev/vdb --image {images['v2']} 2>&1", INSTALL_TIMEOUT)
    print(out)
    assert "signature verified with" in out and "pulling" in out, out
    refused = m.fail(f"cos install --force /dev/vdb --image {images['unsigned']} 2>&1")
    assert "unsigned" in refused, refused
    m.succeed("mkdir -p /run/check /run/slot && mount -o ro /dev/vdb4 /run/check")
    m.succeed("mount -o loop,ro /run/check/cOS/slots/2.img /run/slot")
    assert m.succeed("cat /run/slot/usr/share/cos/test-variant").strip() == "v2"
    info = json.loads(m.succeed("cat /run/check/cOS/slots/2.json"))
    assert info["version"] == testimages.next_version(built.flavor.version), info
    records = json.loads(m.succeed("cat /run/check/cOS/slots/1.layers.json"))["layers"]
    assert [r["digest"] for r in records] == info["layers"][1:], records
    m.succeed("umount /run/slot /run/check")


@pytest.mark.slow
def test_reset_from_an_image_and_wipe_oem(machine, images, built):  # noqa: F811
    """From recovery, `cos reset --image REF --wipe-oem`: the slots hold the verified image
    with what its layers wrote, COS_OEM is empty, COS_PERSISTENT kept."""
    m = machine
    m.succeed("echo kept > /usr/local/data && echo marker > /oem/marker")
    m.succeed("cos rollback --recovery")
    m.reboot()
    assert booted(m)["slot"] == "recovery"
    out = m.succeed(f"cos reset --image {images['v2']} --wipe-oem 2>&1", INSTALL_TIMEOUT)
    print(out)
    assert "wiping COS_OEM" in out and "kept: COS_PERSISTENT" in out, out
    m.reboot()
    assert booted(m)["slot"] == "active"
    assert m.succeed("cat /usr/share/cos/test-variant").strip() == "v2"
    assert m.succeed("cat /usr/local/data").strip() == "kept"
    assert m.execute("test -e /oem/marker")[0] != 0
    found = status(m)
    assert found["last_reset"]["wiped"] == "oem"
    assert found["version"] == testimages.next_version(built.flavor.version)
    # The slots record what the image's layers wrote (an upgrade can start from a copy of
    # them); an upgrade to the same image would pull nothing
    active = found["slots"]["active"]
    records = json.loads(m.succeed(f"cat /run/cos/state/cOS/slots/{active['name']}.layers.json"))
    assert [r["digest"] for r in records["layers"]] == active["layers"][1:], records
    dry = m.succeed(f"cos upgrade --dry-run --image {images['v2']}", INSTALL_TIMEOUT)
    assert "pulling 0.0 of" in dry, dry


@pytest.mark.slow
def test_upgrade_recovery_to_v2_then_boot_it(machine, images, built):  # noqa: F811
    """`cos upgrade --recovery`: a power cut while the new image is made leaves the old one
    booting; the next run cleans that up and switches; the recovery entry then boots v2,
    while the slots keep v1."""
    m = machine
    v1, v2 = built.flavor.version, testimages.next_version(built.flavor.version)
    assert (status(m)["recovery"]["name"], status(m)["recovery"]["version"]) == ("1", v1)
    upgrade = f"cos upgrade --recovery --image {images['v2']}"
    m.succeed(f"setsid {upgrade} >/run/recovery.log 2>&1 </dev/null &")
    m.wait_until_succeeds("grep -q 'making the recovery image' /run/recovery.log", UPGRADE_TIMEOUT)
    m.power_cut()
    m.start()
    assert (status(m)["recovery"]["name"], status(m)["recovery"]["version"]) == ("1", v1)
    out = m.succeed(f"{upgrade} 2>&1", UPGRADE_TIMEOUT)
    print(out)
    assert "recovery image 2 holds" in out, out
    found = status(m)
    assert (found["recovery"]["name"], found["recovery"]["version"]) == ("2", v2), found
    assert found["recovery"]["digest"].startswith("sha256:"), found
    assert found["slots"]["active"]["version"] == v1  # the slots are left alone
    names = m.succeed("ls -A /run/cos/state/cOS/slots").split()
    assert {n.split(".")[0] for n in names} == {"1", "2"}, names  # no scratch slot left
    m.succeed("mkdir -p /run/rec && mount -o ro LABEL=COS_RECOVERY /run/rec")
    listed = m.succeed("ls -A /run/rec/cOS/recovery").split()
    m.succeed("umount /run/rec")
    assert listed == ["2.img", "2.json", "2.layers.json"], listed  # the partial and 1 gone
    m.succeed("cos rollback --recovery")
    m.reboot()
    assert booted(m) == {
        "slot": "recovery", "image": "/cOS/recovery/2.img", "label": "COS_RECOVERY"
    }  # fmt: skip
    assert m.succeed("cat /usr/share/cos/test-variant").strip() == "v2"
    assert status(m)["version"] == v2
