"""GRUB's choices and the boot assessment, on a real machine: one-shot entries, and a
tentative boot that fails its health checks falling back to the passive slot."""

import json

import pytest
from guest_commands import SET_GRUBENV

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def boot_record(m) -> dict:
    return dict(line.split("=", 1) for line in m.succeed("cat /run/cos/boot").split())


def status(m) -> dict:
    return json.loads(m.succeed("cos status --json"))


def test_one_shot_recovery_then_back_to_active(machine):
    m = machine
    m.succeed(SET_GRUBENV + "next_entry=recovery")
    m.reboot()
    assert boot_record(m)["slot"] == "recovery"
    assert m.succeed("findmnt -n -o FSTYPE /").strip() == "squashfs"
    assert status(m)["grubenv"].get("next_entry", "") == ""  # GRUB cleared it
    m.reboot()
    assert boot_record(m)["slot"] == "active"


def test_failed_tentative_boot_falls_back_to_passive(machine):
    m = machine
    # A health check that fails on the active slot only, as a broken new slot would.
    m.succeed(
        "mkdir -p /oem/health.d && printf '#!/bin/sh\\n! grep -q slot=active /run/cos/boot\\n' "
        "> /oem/health.d/50-broken-active && chmod +x /oem/health.d/50-broken-active"
    )
    m.succeed(SET_GRUBENV + "cos_tentative=yes")
    # GRUB tries active once; its assessment fails and reboots; GRUB then boots passive.
    # The tentative boot may answer SSH for a moment, unhealthy: no health gate here.
    m.reboot(check_health=False, fail_fast=False)
    m.wait_until_succeeds("grep -q slot=passive /run/cos/boot", timeout=150)  # scaled
    m.wait_for_unit("cos-boot-assessment.service")
    env = status(m)["grubenv"]
    assert env.get("cos_rollback") == "yes"
    assert env.get("cos_tentative", "") == ""
    assert boot_record(m)["slot"] == "passive"
