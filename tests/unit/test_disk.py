"""The disk image builder, checked with real tools on image files: sfdisk, blkid, mtools,
e2fsck, grub-script-check, cpio."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit import paths
from toolkit.arch import get_arch
from toolkit.disk import build_disk, make_slot_image
from toolkit.grub import embedded_config, grub_modules
from toolkit.initramfs import Cpio, build_initramfs

GRUB_PACKAGE = paths.PACKAGES_DIR / "cos-grub"
HOST_GRUB = Path("/usr/lib/grub/x86_64-efi")


def fake_rootfs(root: Path) -> Path:
    """A tiny tree with what the disk builder reads: cos-grub's files and GRUB modules."""
    share = root / "usr/share/cos/grub"
    share.mkdir(parents=True)
    for name in ("grub.cfg", "early.cfg", "modules"):
        shutil.copy(GRUB_PACKAGE / name, share / name)
    (root / "usr/lib/grub").mkdir(parents=True)
    (root / "usr/lib/grub/x86_64-efi").symlink_to(HOST_GRUB)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("ID=test\n")
    return root


def offsets(disk: Path) -> dict[str, int]:
    table = json.loads(
        subprocess.run(
            ["sfdisk", "-J", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    return {p["name"]: p["start"] * 512 for p in table["partitions"]}


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    if not HOST_GRUB.is_dir():
        pytest.skip("grub-efi-amd64-bin is not installed on this host")
    work = tmp_path_factory.mktemp("disk")
    rootfs = fake_rootfs(work / "rootfs")
    slot = work / "system.img"
    make_slot_image(rootfs, slot, epoch=1700000000)
    recovery = work / "recovery.img"
    subprocess.run(["mksquashfs", str(rootfs), str(recovery), "-quiet", "-no-progress"], check=True)
    output = work / "disk.raw"
    build_disk(rootfs, slot, recovery, get_arch("x86_64"), output, epoch=1700000000)
    return output


def test_partition_table_and_labels(disk):
    found = offsets(disk)
    assert list(found) == ["COS_GRUB", "COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT"]
    for label, offset in found.items():
        probe = subprocess.run(
            ["blkid", "-p", "-O", str(offset), "-o", "export", str(disk)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"LABEL={label}" in probe
        assert ("TYPE=vfat" if label == "COS_GRUB" else "TYPE=ext4") in probe


def test_esp_holds_grub_and_config(disk):
    esp = f"{disk}@@{offsets(disk)['COS_GRUB']}"
    listing = subprocess.run(
        ["mdir", "-/", "-b", "-i", esp, "::/"], capture_output=True, text=True, check=True
    ).stdout
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing
    assert "::/EFI/cos/grub.cfg" in listing
    env = subprocess.run(
        ["mtype", "-i", esp, "::/EFI/cos/grubenv"], capture_output=True, check=True
    ).stdout
    assert env.startswith(b"# GRUB Environment Block") and len(env) == 1024


def test_state_holds_both_slots_as_one_copy_and_the_pointer(disk, tmp_path):
    state = tmp_path / "state.img"
    start = offsets(disk)["COS_STATE"]
    subprocess.run(
        ["dd", f"if={disk}", f"of={state}", "bs=1M", f"skip={start >> 20}", "status=none"],
        check=True,
    )

    def debugfs(request: str) -> str:
        return subprocess.run(
            ["debugfs", "-R", request, str(state)], capture_output=True, text=True, check=True
        ).stdout

    listing = debugfs("ls -l /cOS/slots")
    inodes = {line.split()[-1]: line.split()[0] for line in listing.splitlines() if ".img" in line}
    assert set(inodes) == {"1.img", "2.img"}
    assert inodes["1.img"] == inodes["2.img"]  # a hard link until the first upgrade
    pointer = tmp_path / "state.env"
    debugfs(f"dump /cOS/state.env {pointer}")
    shown = subprocess.run(
        ["grub-editenv", str(pointer), "list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown == ["cos_active=2", "cos_passive=1"]
    info = json.loads(debugfs("cat /cOS/slots/2.json"))
    assert info["name"] == "2" and info["source"] == "built disk"
    subprocess.run(["e2fsck", "-fn", str(state)], check=True, capture_output=True)


def test_grub_cfg_is_valid_script():
    subprocess.run(["grub-script-check", str(GRUB_PACKAGE / "grub.cfg")], check=True)
    subprocess.run(["grub-script-check", str(GRUB_PACKAGE / "early.cfg")], check=True)


def test_embedded_early_configs_carry_no_comments():
    # GRUB runs them before its normal parser: each comment line printed an error on boot
    for name in ("early.cfg", "iso-early.cfg"):
        text = embedded_config((GRUB_PACKAGE / name).read_text())
        assert "search --no-floppy" in text and "configfile $prefix/grub.cfg" in text
        assert not [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_grub_cfg_has_the_three_entries_and_assessment():
    text = (GRUB_PACKAGE / "grub.cfg").read_text()
    for entry in ("--id active", "--id passive", "--id recovery"):
        assert entry in text
    for variable in ("next_entry", "saved_entry", "cos_tentative", "cos_attempts"):
        assert variable in text


def test_grub_modules_all_exist(tmp_path):
    if not HOST_GRUB.is_dir():
        pytest.skip("grub-efi-amd64-bin is not installed on this host")
    for module in grub_modules(fake_rootfs(tmp_path / "rootfs")):
        assert (HOST_GRUB / f"{module}.mod").exists(), module


def test_initramfs_is_a_valid_cpio(tmp_path):
    version = "6.1.0-test"
    root = tmp_path / "rootfs"
    moddir = root / "usr/lib/modules" / version
    (moddir / "kernel/fs").mkdir(parents=True)
    import lzma

    (moddir / "kernel/fs/loop.ko.xz").write_bytes(lzma.compress(b"loop-module"))
    (moddir / "kernel/fs/overlay.ko").write_bytes(b"overlay-module")
    (moddir / "kernel/fs/dep.ko").write_bytes(b"dep-module")
    (moddir / "kernel/fs/ahci.ko").write_bytes(b"ahci-module")
    (moddir / "modules.dep").write_text(
        "kernel/fs/loop.ko.xz: kernel/fs/dep.ko\n"
        "kernel/fs/overlay.ko:\nkernel/fs/dep.ko:\n"
        "kernel/fs/ahci.ko: kernel/fs/dep.ko\n"
    )
    (moddir / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    share = root / "usr/share/cos/initramfs"
    share.mkdir(parents=True)
    shutil.copy(paths.PACKAGES_DIR / "cos-initramfs/init", share / "init")
    (share / "modules").write_text("ext4\nloop\noverlay\nabsent?\n")
    (share / "modules-fallback").write_text("ahci?\nloop\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/busybox").write_bytes(b"\x7fELF-busybox")

    image = tmp_path / "initrd.img"
    image.write_bytes(build_initramfs(root, version))
    listing = subprocess.run(
        ["cpio", "-itv"], input=image.read_bytes(), capture_output=True, check=True
    ).stdout.decode()
    assert "init" in listing and "bin/busybox" in listing
    assert any(line.startswith("crw") and "dev/console" in line for line in listing.splitlines())
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=image.read_bytes(), cwd=out, check=True)
    order = (out / "etc/cos-modules").read_text().split()
    # dependencies first, compressed modules unpacked, built-in ones skipped
    assert order == [
        f"/lib/modules/{version}/dep.ko",
        f"/lib/modules/{version}/loop.ko",
        f"/lib/modules/{version}/overlay.ko",
    ]
    assert (out / f"lib/modules/{version}/loop.ko").read_bytes() == b"loop-module"
    # the fallback list holds only what the first one does not already load
    assert (out / "etc/cos-modules-fallback").read_text().split() == [
        f"/lib/modules/{version}/ahci.ko"
    ]


def test_cpio_pads_to_four_bytes():
    cpio = Cpio()
    cpio.file("a", b"xyz")
    data = cpio.finish()
    assert len(data) % 4 == 0 and data.startswith(b"070701")
