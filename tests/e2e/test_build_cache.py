"""A no-op rebuild of the built image does nothing: every stage comes from the cache."""

import pytest

from toolkit.build import build

pytestmark = pytest.mark.image


def test_noop_rebuild_reuses_every_stage(vm_settings, vm_arch):
    images = build(vm_settings.flavor, vm_arch, log=lambda _m: None)
    assert [s.status for s in images[0].stages] == ["cached"] * len(images[0].stages)
    assert [s.name for s in images[0].stages] == [
        "rootfs",
        "system-image",
        "recovery-image",
        "oci",  # before the disk: a fresh disk's slots record the image's layers
        "disk",
        "installer-iso",
    ]
