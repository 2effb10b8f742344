"""The recovery image, made by the real mksquashfs: with SOURCE_DATE_EPOCH set (as users
set it for reproducible builds) and without, at the build's time."""

import subprocess

import pytest

from toolkit.recovery import make_recovery_image


@pytest.mark.parametrize("from_env", [True, False])
def test_recovery_image_is_made_at_the_build_time(tmp_path, monkeypatch, from_env):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    if from_env:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    else:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    image = tmp_path / "recovery.img"
    make_recovery_image(root, image, 1700000000)
    listing = subprocess.run(
        ["unsquashfs", "-lls", "-UTC", str(image)], capture_output=True, text=True, check=True
    ).stdout
    assert "2023-11-14 22:13 squashfs-root/etc/os-release" in listing
