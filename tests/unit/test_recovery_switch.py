"""cos.recovery on a folder standing for COS_RECOVERY: a new image is named by the pointer
only once it is whole; a failure while it is written leaves the old image named and no
partial file; leftovers of an interrupted run go at the next."""

import pytest

from cos import grubenv, recovery
from cos.errors import CosError


def put(root, content: bytes, info: dict) -> None:
    with recovery.new_image(root, info) as partial:
        partial.write_bytes(content)


def test_images_switch_by_the_pointer_and_the_old_one_goes(tmp_path):
    put(tmp_path, b"one", {"version": "1"})
    put(tmp_path, b"two", {"version": "2"})
    assert grubenv.read(tmp_path / recovery.POINTER) == {"cos_recovery": "2"}
    assert recovery.current_image(tmp_path).read_bytes() == b"two"
    assert recovery.describe_image(tmp_path) == {"version": "2", "name": "2"}
    assert sorted(p.name for p in (tmp_path / recovery.IMAGES).iterdir()) == ["2.img", "2.json"]


def test_a_failure_while_writing_leaves_the_old_image_named(tmp_path):
    put(tmp_path, b"one", {"version": "1"})
    with pytest.raises(CosError, match="mksquashfs failed"):
        with recovery.new_image(tmp_path, {"version": "2"}) as partial:
            partial.write_bytes(b"half")
            raise CosError("mksquashfs failed (exit 1): No space left on device")
    assert recovery.current_image(tmp_path).read_bytes() == b"one"
    assert sorted(p.name for p in (tmp_path / recovery.IMAGES).iterdir()) == ["1.img", "1.json"]


def test_leftovers_of_a_power_cut_go_at_the_next_write(tmp_path):
    put(tmp_path, b"one", {"version": "1"})
    folder = tmp_path / recovery.IMAGES
    (folder / ".2.img.new").write_bytes(b"half")  # what a power cut mid-write leaves
    (folder / "2.json").write_text("{}")
    assert recovery.current_image(tmp_path).read_bytes() == b"one"  # GRUB boots this one
    put(tmp_path, b"three", {"version": "3"})
    assert sorted(p.name for p in folder.iterdir()) == ["2.img", "2.json"]
    assert recovery.current_image(tmp_path).read_bytes() == b"three"


def test_a_missing_or_bad_pointer_is_named(tmp_path):
    with pytest.raises(CosError, match="cOS/recovery.env missing"):
        recovery.current_image(tmp_path)
    (tmp_path / "cOS").mkdir()
    grubenv.create(tmp_path / recovery.POINTER, {"cos_recovery": "x"})
    with pytest.raises(CosError, match="cos_recovery='x' is not an image name"):
        recovery.current_image(tmp_path)
    grubenv.create(tmp_path / recovery.POINTER, {"cos_recovery": "4"})
    with pytest.raises(CosError, match="cOS/recovery/4.img .named by cOS/recovery.env. missing"):
        recovery.current_image(tmp_path)


@pytest.mark.parametrize("slot", ["recovery", "live"])
def test_the_recovery_upgrade_refuses_to_run_from_recovery_or_live(tmp_path, monkeypatch, slot):
    from cos import slots

    boot = tmp_path / "boot"
    boot.write_text(f"slot={slot}\nimage=/cOS/recovery/1.img\nlabel=COS_RECOVERY\n")
    monkeypatch.setattr(slots, "BOOT_FILE", boot)
    with pytest.raises(
        CosError, match=f"runs from the active or passive system; this is the {slot}"
    ):
        recovery.upgrade_recovery("registry.invalid/cos/x:1")
