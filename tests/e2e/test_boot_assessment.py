"""GRUB's choices and the boot assessment on a real machine: one-shot entries, a trial
boot that passes and one that fails, a trial armed for a slot that never became active,
and `cos rollback`. A fresh disk has slot 2 active and slot 1 passive (the same system),
so which slot booted is told by its image file."""

import json

import pytest
from guest_commands import SET_GRUBENV

pytestmark = pytest.mark.vm


def booted_image(m) -> str:
    return dict(line.split("=", 1) for line in m.succeed("cat /run/cos/boot").split())["image"]


def status(m) -> dict:
    return json.loads(m.succeed("cos status --json"))


ASSESSMENT = ("cos_tentative", "cos_attempts", "cos_failed", "cos_fail_reason")


@pytest.mark.slow
def test_one_shot_recovery_then_back_to_active(machine):
    m = machine
    m.succeed(SET_GRUBENV + "next_entry=recovery")
    m.reboot()
    assert booted_image(m) == "/cOS/recovery/1.img"
    assert m.succeed("findmnt -n -o FSTYPE /").strip() == "squashfs"
    assert status(m)["grubenv"].get("next_entry", "") == ""  # GRUB cleared it
    m.reboot()
    assert booted_image(m) == "/cOS/slots/2.img"


def test_healthy_trial_boot_marks_itself_good_and_stays_active(machine):
    m = machine
    m.succeed(SET_GRUBENV + "cos_tentative=2")
    m.reboot()
    assert booted_image(m) == "/cOS/slots/2.img"
    m.wait_for_unit("cos-boot-assessment.service")
    after = status(m)
    assert after["assessment"] == "good" and after["booted"] == "active"
    # GRUB counted the trial boot; the agent ended the trial, so nothing is left to count
    assert not {k: v for k, v in after["grubenv"].items() if k in ASSESSMENT}
    assert after["slots"]["active"]["name"] == "2"


def test_trial_armed_for_a_slot_that_is_not_active_is_ignored(machine):
    # What a power cut between arming a new slot and switching the pointer leaves.
    m = machine
    m.succeed(SET_GRUBENV + "cos_tentative=1")
    m.reboot()
    assert booted_image(m) == "/cOS/slots/2.img"
    env = status(m)["grubenv"]
    assert "cos_attempts" not in env and "cos_failed" not in env


@pytest.mark.slow
def test_failed_trial_boot_falls_back_and_the_rollback_lasts(machine):
    m = machine
    # A health check that fails on slot 2 only, as a broken new system would.
    m.succeed(
        "mkdir -p /oem/health.d && printf '#!/bin/sh\\n! grep -q image=/cOS/slots/2.img "
        "/run/cos/boot\\n' > /oem/health.d/50-broken && chmod +x /oem/health.d/50-broken"
    )
    m.succeed(SET_GRUBENV + "cos_tentative=2")
    # GRUB tries slot 2 once; its assessment fails and reboots; GRUB then boots slot 1.
    # The trial boot may answer SSH for a moment, unhealthy: no health gate here.
    m.reboot(check_health=False, fail_fast=False)
    m.wait_until_succeeds("grep -q image=/cOS/slots/1.img /run/cos/boot", timeout=150)
    m.wait_for_unit("cos-boot-assessment.service")
    after = status(m)
    assert after["slots"]["active"]["name"] == "1" and after["slots"]["passive"]["name"] == "2"
    assert after["booted"] == "active" and after["assessment"] == "good"
    assert after["last_rollback"]["reason"] == "health check failed: 50-broken"
    assert after["last_rollback"]["from_slot"] == "2" and after["last_rollback"]["to_slot"] == "1"
    assert not {k: v for k, v in after["grubenv"].items() if k in ASSESSMENT}
    m.reboot()  # lasting: the failed slot is not tried again
    assert booted_image(m) == "/cOS/slots/1.img"


@pytest.mark.slow
def test_rollback_switches_for_good_and_back(machine):
    m = machine
    assert "slot 1 is active" in m.succeed("cos rollback")
    m.reboot()
    assert booted_image(m) == "/cOS/slots/1.img"
    m.reboot()
    assert booted_image(m) == "/cOS/slots/1.img"
    last = status(m)["last_rollback"]
    assert (last["from_slot"], last["to_slot"], last["automatic"]) == ("2", "1", "no")
    assert "slot 2 is active" in m.succeed("cos rollback")
    m.reboot()
    assert booted_image(m) == "/cOS/slots/2.img"
