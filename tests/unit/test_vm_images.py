"""Where the built images are looked up, and the error when one is not built."""

from pathlib import Path

import pytest

from vm import images
from vm.errors import ImageNotBuilt


@pytest.fixture(autouse=True)
def _build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))


def test_image_not_built_message(tmp_path: Path) -> None:
    with pytest.raises(ImageNotBuilt) as err:
        images.built_disk("debian-trixie", "aarch64")
    expected = tmp_path / "build/images/debian-trixie/aarch64/disk.qcow2"
    assert str(err.value) == (
        f"image not built: {expected}; run `invoke build --flavor debian-trixie --arch aarch64`"
    )
    with pytest.raises(ImageNotBuilt, match="installer.iso"):
        images.installer_iso("debian-trixie", "x86_64")


def test_built_disk_prefers_qcow2(tmp_path: Path) -> None:
    folder = images.image_dir("f", "x86_64")
    folder.mkdir(parents=True)
    (folder / "disk.raw").write_bytes(b"")
    assert images.built_disk("f", "x86_64").name == "disk.raw"
    (folder / "disk.qcow2").write_bytes(b"")
    assert images.built_disk("f", "x86_64").name == "disk.qcow2"
