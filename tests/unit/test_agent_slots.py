"""The agent's slot state and its verbs (mark-good, mark-bad, rollback, status) on real
files: a COS_STATE and a COS_GRUB folder, the pointer and grubenv checked with GRUB's own
grub-editenv. Only the mounting of the partitions by label is replaced by the folders."""

import json
import subprocess
from contextlib import contextmanager

import pytest

from cos import assess, slots, status
from cos.errors import CosError
from cos.rollback import rollback


def editenv(path, *args) -> dict[str, str]:
    out = subprocess.run(
        ["grub-editenv", str(path), *args], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fresh disk's state: slots 2 (active) and 1 (passive), booted from active."""
    parts = {"COS_STATE": tmp_path / "state", "COS_GRUB": tmp_path / "esp"}
    (parts["COS_STATE"] / "cOS/slots").mkdir(parents=True)
    for name in ("1", "2"):
        slots.image_path(parts["COS_STATE"], name).write_bytes(b"system")
        slots.info_path(parts["COS_STATE"], name).write_text(
            json.dumps({"name": name, "flavor": "debian-trixie", "version": f"1.{name}"})
        )
    slots.write_pointer(parts["COS_STATE"], slots.Pointer("2", "1"))
    (parts["COS_GRUB"] / "EFI/cos").mkdir(parents=True)
    editenv(parts["COS_GRUB"] / slots.GRUBENV, "create")

    @contextmanager
    def mounted(label, writable=False):
        yield parts[label]

    monkeypatch.setattr(slots, "mounted", mounted)
    monkeypatch.setattr(slots, "BOOT_FILE", tmp_path / "boot")
    machine = type("Machine", (), {})()
    machine.state, machine.esp = parts["COS_STATE"], parts["COS_GRUB"]
    machine.grubenv = lambda: editenv(parts["COS_GRUB"] / slots.GRUBENV, "list")
    machine.pointer = lambda: editenv(parts["COS_STATE"] / slots.POINTER, "list")
    machine.boot = lambda slot, name: (tmp_path / "boot").write_text(
        f"slot={slot}\nimage=/cOS/slots/{name}.img\nlabel=COS_STATE\n"
    )
    machine.set = lambda *pairs: editenv(parts["COS_GRUB"] / slots.GRUBENV, "set", *pairs)
    machine.boot("active", "2")
    return machine


def test_pointer_is_what_grub_editenv_reads_and_replaced_whole(machine):
    assert machine.pointer() == {"cos_active": "2", "cos_passive": "1"}
    slots.write_pointer(machine.state, slots.Pointer("1", "2"))
    assert machine.pointer() == {"cos_active": "1", "cos_passive": "2"}
    assert sorted(p.name for p in (machine.state / "cOS").iterdir()) == ["slots", "state.env"]


def test_pointer_never_names_a_missing_image(machine):
    with pytest.raises(CosError, match="3.img: missing"):
        slots.write_pointer(machine.state, slots.Pointer("3", "2"))
    assert machine.pointer() == {"cos_active": "2", "cos_passive": "1"}


def test_good_trial_boot_ends_the_trial_and_stays_on_active(machine):
    machine.set("cos_tentative=2", "cos_attempts=1")
    assert assess.mark_good() == "slot 2 marked good"
    assert machine.grubenv() == {}
    assert machine.pointer() == {"cos_active": "2", "cos_passive": "1"}


def test_fallback_is_made_lasting_with_its_reason(machine):
    # GRUB's part: the trial of slot 2 failed, it booted passive and noted the slot.
    machine.set("cos_failed=2", "cos_fail_reason=health check failed: 50-broken")
    machine.boot("passive", "1")
    assert "slot 1 is active" in assess.mark_good()
    assert machine.pointer() == {"cos_active": "1", "cos_passive": "2"}
    assert machine.grubenv() == {}
    gathered = status.gather()
    assert gathered["booted"] == "active"  # the running slot is the active one now
    assert gathered["last_rollback"]["reason"] == "health check failed: 50-broken"
    assert gathered["last_rollback"]["automatic"] == "yes"


def test_a_fallback_without_a_reason_did_not_reach_the_assessment(machine):
    machine.set("cos_failed=2")
    machine.boot("passive", "1")
    assess.mark_good()
    assert status.gather()["last_rollback"]["reason"] == "did not reach the assessment"


def test_passive_booted_by_choice_changes_nothing(machine):
    machine.boot("passive", "1")
    assert "by choice" in assess.mark_good()
    assert machine.pointer() == {"cos_active": "2", "cos_passive": "1"}


def test_mark_bad_records_the_reason_only_on_a_trial_boot(machine):
    assert "not a trial boot" in assess.mark_bad("emergency mode", reboot=False)
    assert machine.grubenv() == {}
    machine.set("cos_tentative=2", "cos_attempts=1")
    assess.mark_bad("health check failed: 10-sshd", reboot=False)
    assert machine.grubenv()["cos_fail_reason"] == "health check failed: 10-sshd"
    assert "failed its trial boot" not in status.gather()["assessment"]  # GRUB decides that
    assert status.gather()["assessment"].startswith("slot 2 on trial")


def test_a_trial_armed_for_a_slot_that_is_not_active_is_not_a_trial(machine):
    machine.set("cos_tentative=3", "cos_attempts=1")
    assert not assess.is_trial_boot()
    assert status.gather()["assessment"] == "good"


def test_rollback_swaps_for_good_and_clears_the_assessment(machine):
    machine.set("cos_tentative=2", "cos_attempts=1")
    message = rollback()
    assert "slot 1 is active" in message
    assert machine.pointer() == {"cos_active": "1", "cos_passive": "2"}
    assert machine.grubenv() == {}
    last = status.gather()["last_rollback"]
    assert (last["from_slot"], last["to_slot"], last["automatic"]) == ("2", "1", "no")
    rollback()
    assert machine.pointer() == {"cos_active": "2", "cos_passive": "1"}


def test_rollback_once_is_a_one_shot_menu_choice(machine):
    rollback(once=True)
    assert machine.grubenv() == {"next_entry": "passive"}
    assert machine.pointer() == {"cos_active": "2", "cos_passive": "1"}


def test_rollback_without_a_passive_image_is_refused(machine):
    slots.image_path(machine.state, "1").unlink()
    with pytest.raises(CosError, match="1.img: missing"):
        rollback()
    assert machine.pointer() == {"cos_active": "2", "cos_passive": "1"}


def test_status_names_each_slot(machine):
    text = status.render(status.gather())
    assert "booted:     active" in text
    assert "active:     slot 2  debian-trixie 1.2" in text
    assert "passive:    slot 1  debian-trixie 1.1" in text
    assert "assessment: good" in text


def test_leftovers_are_what_no_pointer_names(machine):
    (machine.state / "cOS/slots/3.img").write_bytes(b"half")
    (machine.state / "cOS/slots/.3.img.new").write_bytes(b"half")
    names = [p.name for p in slots.leftovers(machine.state, slots.read_pointer(machine.state))]
    assert names == [".3.img.new", "3.img"]
    assert slots.next_name(machine.state) == "4"
