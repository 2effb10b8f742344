"""`cos install`'s plan, refusals and steps, with real tools on image files (sfdisk,
blkid, mke2fs): no mounts, no loop devices."""

import io
import json
import subprocess
from pathlib import Path

import pytest

from cos import grubenv, install, layout, recovery, slots
from cos.autoinstall import from_cmdline, settings
from cos.errors import CosError
from cos.progress import Progress

MiB = layout.MiB


def test_layout_is_aligned_contiguous_and_in_order():
    parts = layout.layout(slot_mib=400, recovery_mib=120)
    assert [p.label for p in parts] == list(layout.LABELS)
    assert parts[0].start_mib == 1
    for before, after in zip(parts, parts[1:], strict=False):
        assert after.start_mib == before.end_mib
    sizes = {p.label: p.size_mib for p in parts}
    assert sizes["COS_STATE"] == 3 * 400 + 64  # active, passive, one being written
    assert sizes["COS_RECOVERY"] == 2 * 120 + 24 + 32  # the image and its replacement
    assert sizes["COS_PERSISTENT"] == layout.MIN_PERSISTENT_MIB
    assert parts[0].type_guid == layout.ESP_TYPE
    assert layout.disk_mib(parts) == parts[-1].end_mib + 1


def test_persistent_grows_to_fill_the_disk_or_takes_the_size_asked():
    grown = layout.plan_for_disk("/dev/vda", 8 << 30, 400, 120)
    assert layout.disk_mib(grown) == 8192
    fixed = layout.plan_for_disk("/dev/vda", 8 << 30, 400, 120, persistent_mib=1024)
    assert fixed[-1].size_mib == 1024
    bigger = layout.plan_for_disk("/dev/vda", 8 << 30, 400, 120, recovery_partition=512)
    assert bigger[2].size_mib == 512


def test_a_disk_too_small_is_refused_with_the_size_needed():
    needed = layout.disk_mib(layout.layout(400, 120))
    with pytest.raises(CosError) as err:
        layout.plan_for_disk("/dev/vdb", 1 << 30, 400, 120)
    message = str(err.value)
    assert "/dev/vdb: too small: 1024 MiB" in message
    assert f"at least {needed} MiB" in message
    layout.plan_for_disk("/dev/vdb", needed * MiB, 400, 120)  # exactly enough is enough


def test_sizes_asked_for_are_checked():
    with pytest.raises(CosError, match="--recovery-size 100 MiB is too small: .* needs 296 MiB"):
        layout.plan_for_disk("/dev/vda", 8 << 30, 400, 120, recovery_partition=100)
    with pytest.raises(CosError, match="--persistent-size 64 MiB is too small"):
        layout.plan_for_disk("/dev/vda", 8 << 30, 400, 120, persistent_mib=64)
    assert layout.parse_size_mib("4G", "x") == 4096
    assert layout.parse_size_mib("512", "x") == 512
    assert layout.parse_size_mib("512MiB", "x") == 512
    with pytest.raises(CosError, match="--persistent-size 'lots': not a size"):
        layout.parse_size_mib("lots", "--persistent-size")


def test_partition_table_on_an_image_file(tmp_path):
    disk = tmp_path / "disk.img"
    parts = layout.plan_for_disk(str(disk), 3 << 30, 400, 120)
    with open(disk, "wb") as f:
        f.truncate(3 << 30)
    subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
        input=layout.partition_table(parts).encode(),
        check=True,
    )
    table = json.loads(
        subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, check=True).stdout
    )["partitiontable"]
    found = table["partitions"]
    assert [p["name"] for p in found] == list(layout.LABELS)
    assert all(p["start"] % 2048 == 0 and p["size"] % 2048 == 0 for p in found)
    assert found[0]["type"] == layout.ESP_TYPE
    end = found[-1]["start"] + found[-1]["size"]
    assert table["lastlba"] < (3 << 30) // 512 and end - 1 <= table["lastlba"]
    assert install.existing_content(str(disk)) == "a partition table (gpt)"


def test_what_a_disk_holds_is_found(tmp_path):
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * (4 * MiB))
    assert install.existing_content(str(blank)) is None
    fs = tmp_path / "fs.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(fs), "8M"], check=True)
    assert install.existing_content(str(fs)) == "a file system (ext4)"


def test_device_refusals(tmp_path):
    with pytest.raises(CosError, match="/nonexistent/vdz: no such device"):
        install.check_device("/nonexistent/vdz", False, lambda size: None)
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    with pytest.raises(CosError, match=f"{image}: not a block device"):
        install.check_device(str(image), False, lambda size: None)


LSBLK = {
    "blockdevices": [
        {
            "name": "/dev/vda",
            "mountpoints": [None],
            "children": [
                {"name": "/dev/vda1", "mountpoints": [None]},
                {"name": "/dev/vda2", "mountpoints": ["/oem"]},
                {"name": "/dev/vda4", "mountpoints": ["/run/cos/state"]},
                {"name": "/dev/vda5", "mountpoints": [None]},
            ],
        }
    ]
}


def test_users_of_a_disk_are_named():
    swaps = "Filename Type Size Used Priority\n/dev/vda5 partition 1024 0 -2\n"
    found = install.users_in(json.dumps(LSBLK), swaps)
    assert found == [
        "/dev/vda2 is mounted at /oem",
        "/dev/vda4 is mounted at /run/cos/state",
        "/dev/vda5 is in use as swap",
    ]
    assert install.users_in(json.dumps({"blockdevices": [{"name": "/dev/vdb"}]})) == []


def test_install_config_is_checked_before_anything_is_written(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("hostname: a\nusers: [\n")
    with pytest.raises(CosError, match=f"{bad}: line 3: not valid YAML"):
        install.check_config(bad.read_bytes(), str(bad))
    with pytest.raises(CosError, match="must be a mapping"):
        install.check_config(b"- a\n- b\n", "list.yaml")
    with pytest.raises(CosError, match=f"{tmp_path}/missing.yaml: cannot read the config"):
        install.read_config(str(tmp_path / "missing.yaml"))


def test_slots_and_pointer_as_slots_py_documents(tmp_path):
    """The COS_STATE step on a folder: slot 2 active, slot 1 passive as a hard link of it,
    what each holds, and a pointer GRUB and the agent read."""
    system = tmp_path / "system.img"
    system.write_bytes(b"ext4 slot image" * 1000)
    root = tmp_path / "state"
    root.mkdir()
    info = {"flavor": "debian-trixie", "version": "1.0.0", "manifest": "sha256:ab"}
    source = install.Source("test", tmp_path / "recovery.img", {}, slot_image=system)
    source.slot_info = info
    out = io.StringIO()
    install.write_slots(root, source, Progress(out))
    pointer = slots.read_pointer(root)
    assert (pointer.active, pointer.passive) == ("2", "1")
    active, passive = slots.image_path(root, "2"), slots.image_path(root, "1")
    assert active.read_bytes() == system.read_bytes()
    assert active.stat().st_ino == passive.stat().st_ino  # one copy on disk
    assert slots.slot_info(root, "1")["name"] == "1"
    assert slots.slot_info(root, "2")["version"] == "1.0.0"
    assert grubenv.read(root / slots.POINTER) == {"cos_active": "2", "cos_passive": "1"}
    assert "copying the system" in out.getvalue() and "done in" in out.getvalue()


def test_recovery_step_writes_image_and_what_it_holds(tmp_path):
    recovery_image = tmp_path / "recovery.img"
    recovery_image.write_bytes(b"hsqs" + b"\0" * 5000)
    root = tmp_path / "rec"
    root.mkdir()
    records = [{"digest": "sha256:b", "added_only": True, "paths": ["etc/x"]}]
    source = install.Source("test", recovery_image, {"flavor": "f", "version": "1"})
    source.recovery_records = records
    install.write_recovery(root, source, Progress(io.StringIO()))
    assert grubenv.read(root / recovery.POINTER) == {"cos_recovery": "1"}
    assert recovery.current_image(root).read_bytes() == recovery_image.read_bytes()
    assert recovery.describe_image(root) == {"flavor": "f", "version": "1", "name": "1"}
    assert json.loads((root / "cOS/recovery/1.layers.json").read_text())["layers"] == records
    assert sorted(p.name for p in (root / "cOS/recovery").iterdir()) == [
        "1.img", "1.json", "1.layers.json"
    ]  # fmt: skip


def test_installed_slots_record_their_layers_when_the_source_knows_them(tmp_path):
    system = tmp_path / "system.img"
    system.write_bytes(b"slot")
    root = tmp_path / "state"
    root.mkdir()
    source = install.Source("test", tmp_path / "recovery.img", {}, slot_image=system)
    source.slot_info = {"layers": ["sha256:a", "sha256:b"]}
    source.slot_records = [{"digest": "sha256:b", "added_only": True, "paths": ["etc/x"]}]
    install.write_slots(root, source, Progress(io.StringIO()))
    for name in ("1", "2"):
        assert json.loads(slots.layers_path(root, name).read_text()) == {
            "layers": source.slot_records
        }


def test_unattended_install_settings():
    assert settings("console=ttyS0 quiet", {}) == {}
    assert from_cmdline("cos.install=/dev/vda cos.install.after=poweroff cos.install.force") == {
        "device": "/dev/vda",
        "after": "poweroff",
        "force": True,
    }
    chosen = settings("cos.install.image=r/cos:1", {"device": "/dev/vdb", "image": "x"})
    assert chosen == {"device": "/dev/vdb", "image": "r/cos:1", "after": "reboot"}
    with pytest.raises(CosError, match="no device"):
        settings("", {"image": "x"})
    with pytest.raises(CosError, match="after='later': one of reboot, poweroff, none"):
        settings("", {"device": "/dev/vda", "after": "later"})
    with pytest.raises(CosError, match="unknown keys disk"):
        settings("", {"disk": "/dev/vda"})


def test_toolkit_disk_uses_the_same_plan():
    from toolkit import disk

    assert disk.layout is layout.layout and disk.partition_table is layout.partition_table


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_efi_binary_names_match_the_host_arches(machine):
    from cos.bootloader import efi_arch
    from toolkit.arch import get_arch

    arch = get_arch(machine)
    assert efi_arch(machine).platform == arch.grub_platform
    assert efi_arch(machine).boot_file == arch.efi_boot_file


def test_grub_config_for_the_disk_is_in_the_image_package():
    package = Path(__file__).parents[2] / "packages/cos-grub"
    assert (package / "grub.cfg").exists() and (package / "early.cfg").exists()


def test_the_recovery_system_installs_its_own_image(tmp_path, monkeypatch):
    """From recovery, --local is the image the recovery entry booted (the one the pointer
    named), with what it holds and what its layers wrote."""
    state = tmp_path / "state"
    image = state / "cOS/recovery/3.img"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"hsqs")
    records = [{"digest": "sha256:b", "added_only": True, "paths": ["etc/x"]}]
    (state / "cOS/recovery/3.json").write_text(json.dumps({"version": "2", "name": "3"}))
    (state / "cOS/recovery/3.layers.json").write_text(json.dumps({"layers": records}))
    boot = tmp_path / "boot"
    boot.write_text("slot=recovery\nimage=/cOS/recovery/3.img\nlabel=COS_RECOVERY\n")
    monkeypatch.setattr(slots, "BOOT_FILE", boot)
    monkeypatch.setattr(install, "BOOTED", state)
    # Measuring the tree loop-mounts the image: not on the host.
    monkeypatch.setattr(install, "finish_source", lambda source, steps: source)
    source = install.local_source(Progress(io.StringIO()))
    assert source.tree_image == source.recovery_image == image
    assert source.recovery_info == {"version": "2", "name": "3"}
    assert source.slot_records == source.recovery_records == records


def test_unattended_install_reads_the_nocloud_user_data(tmp_path, monkeypatch):
    """Through cos-cloud-config's own NoCloud reader (a renamed reader once made the
    unattended install read nothing, silently)."""
    from cos import autoinstall
    from cos_cloud_config import nocloud

    (tmp_path / "user-data").write_text(
        "#cloud-config\nhostname: a\ninstall:\n  device: /dev/vdb\n  after: poweroff\n"
    )
    monkeypatch.setattr(nocloud, "mount_volume", lambda: tmp_path)
    assert autoinstall.from_user_data() == {"device": "/dev/vdb", "after": "poweroff"}
    monkeypatch.setattr(nocloud, "mount_volume", lambda: None)
    assert autoinstall.from_user_data() == {}


def test_earlier_nvram_entries_of_cos_are_found_by_label():
    # efibootmgr 18 (trixie) prints each entry's device path after a tab; 17 does not.
    listing = (
        "BootCurrent: 0004\nTimeout: 0 seconds\nBootOrder: 0004,0001,0000\n"
        "Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21)\n"
        "Boot0001* UEFI QEMU HARDDISK QM00001 \tPciRoot(0x0)/Pci(0x1f,0x2)\n"
        "Boot0004* cOS\tHD(1,GPT,5b2c,0x800,0x10000)/\\EFI\\BOOT\\BOOTX64.EFI\n"
        "Boot0007* cOS\n"
        "Boot0008  cOS old\n"
    )
    assert install.nvram_entries_named(listing, "cOS") == ["0004", "0007"]
