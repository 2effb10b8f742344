"""`cos upgrade --recovery` on the host against a real docker-registry (the images and the
machine of test_agent_upgrade): pulled and verified as an upgrade is, written as a scratch
slot (a real ext4 image, loop-mounted), made into a squashfs by the real mksquashfs and
switched to by the pointer; a refused image or a failure leaves the recovery as it was."""

import os
import subprocess
from contextlib import contextmanager

import pytest
import test_agent_upgrade as upgrade_tests

from cos import recovery, slots
from cos.errors import CosError

# The machine, registry and images of the upgrade tests (pytest finds fixtures by name here)
address, keys, machine = upgrade_tests.address, upgrade_tests.keys, upgrade_tests.machine
monkeypatch_module, published = upgrade_tests.monkeypatch_module, upgrade_tests.published
silent, snapshot = upgrade_tests.silent, upgrade_tests.snapshot


@pytest.fixture
def recovery_part(tmp_path, monkeypatch):
    """COS_RECOVERY as a folder holding image 1, with an interrupted run's partial."""
    root = tmp_path / "recovery"
    root.mkdir()
    with recovery.new_image(root, {"version": "1.0.0"}) as partial:
        partial.write_bytes(b"old recovery")
    (root / recovery.IMAGES / ".2.img.new").write_bytes(b"cut short")

    @contextmanager
    def mounted(writable=False):
        yield root

    monkeypatch.setattr(recovery, "_recovery_partition", mounted)
    monkeypatch.setattr(recovery, "WORK", tmp_path / "work")
    return root


def test_recovery_upgrade_writes_a_squashfs_and_switches(
    machine,
    published,
    recovery_part,
    tmp_path,
):
    slots_before = snapshot(machine)
    message = recovery.upgrade_recovery(published["signed"], progress=silent())
    assert "recovery image 2 holds" in message and "test 2.0.0" in message, message
    assert recovery.describe_image(recovery_part)["version"] == "2.0.0"
    assert sorted(p.name for p in (recovery_part / recovery.IMAGES).iterdir()) == [
        "2.img", "2.json", "2.layers.json"
    ]  # fmt: skip
    assert snapshot(machine) == slots_before  # the slots are left alone, no scratch slot
    image = recovery.current_image(recovery_part)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", "-t", "squashfs", str(image), str(mnt)], check=True)
    try:
        ping = mnt / "usr/bin/ping"
        assert os.getxattr(ping, "security.capability") == upgrade_tests.CAPABILITY
        assert ping.stat().st_mode & 0o7777 == 0o4755
        assert not (mnt / "lost+found").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_refused_image_leaves_the_recovery_as_it_was(machine, published, recovery_part):
    with pytest.raises(CosError, match="wrongly signed"):
        recovery.upgrade_recovery(published["other-key"], progress=silent())
    assert recovery.current_image(recovery_part).read_bytes() == b"old recovery"


def test_a_failed_squashfs_leaves_the_recovery_as_it_was(
    machine,
    published,
    recovery_part,
    monkeypatch,
):
    def fail(slot_image, output):
        output.write_bytes(b"half")
        raise CosError("mksquashfs 2.img.new failed (exit 1): No space left on device")

    monkeypatch.setattr(recovery, "make_squashfs", fail)
    with pytest.raises(CosError, match="No space left"):
        recovery.upgrade_recovery(published["signed"], progress=silent())
    assert recovery.current_image(recovery_part).read_bytes() == b"old recovery"
    assert sorted(p.name for p in (recovery_part / recovery.IMAGES).iterdir()) == [
        "1.img", "1.json"
    ]  # fmt: skip
    assert {p.name.split(".")[0] for p in (machine / slots.SLOTS).iterdir()} == {"1", "2"}
