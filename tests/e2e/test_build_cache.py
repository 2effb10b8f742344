"""A no-op rebuild of the built image does nothing: every stage comes from the cache."""

import pytest

from toolkit.build import build
from toolkit.flavors import load_flavor

pytestmark = pytest.mark.image


def test_noop_rebuild_reuses_every_stage(vm_settings, vm_arch):
    # `invoke test` built the flavor in another process: its keys must come out the same
    images = build(vm_settings.flavor, vm_arch, log=lambda _m: None)
    assert [s.status for s in images[0].stages] == ["cached"] * len(images[0].stages)
    # a Containerfile flavor's first stage is buildah's
    containerfile = ["containerfile"] if load_flavor(vm_settings.flavor).containerfile else []
    assert [s.name for s in images[0].stages] == [
        *containerfile,
        "rootfs",
        "system-image",
        "recovery-image",
        "oci",  # before the disk: a fresh disk's slots record the image's layers
        "disk",
        "installer-iso",
    ]
