"""The example Containerfile flavor (images/web-appliance: the parent plus nginx) on real
machines: its own disk boots and serves, and a machine on the parent upgrades to it from
the session's registry, pulling only the derivative's own layers, serves, and rolls back.
The same image taken in by `invoke build --image` (from the registry, from an OCI layout)
gives a disk that boots and serves, and pushed as `invoke push --image` pushes it, an
upgrade target.

The derivative is built here for the run's arch (its parent is the image the suite just
built, so only the derivative's stages run, or none when they are current)."""

import json
import shutil
from functools import partial

import pytest

from toolkit import oci
from toolkit.build import ImageBuild, build, image_folder
from toolkit.errors import CosError
from toolkit.flavors import load_flavor
from toolkit.fromimage import build_from_image
from toolkit.publish import push_built_image, push_signed, repository_for

pytestmark = pytest.mark.vm

EXAMPLE = "web-appliance"
PARENT = "debian-trixie"
GUEST_REGISTRY = "10.0.2.100:5000"  # the session registry, as QEMU's guest forward shows it
UPGRADE_TIMEOUT = 300  # KVM seconds, scaled by the harness
PAGE = "cOS web-appliance: served by nginx"


@pytest.fixture(scope="module")
def derived(vm_settings, vm_arch) -> ImageBuild:
    if vm_settings.flavor not in (PARENT, EXAMPLE):
        pytest.skip(f"{EXAMPLE} builds on {PARENT}; this run is for {vm_settings.flavor}")
    (image,) = build(EXAMPLE, vm_arch, log=lambda _line: None)
    return image


def status(m) -> dict:
    return json.loads(m.succeed("cos status --json"))


def test_the_derivative_disk_boots_and_serves(machine_factory, derived):
    m = machine_factory(flavor=EXAMPLE)
    m.wait_for_unit("nginx.service")
    assert PAGE in m.succeed("curl -fsS http://localhost/")
    now = status(m)
    assert (now["flavor"], now["version"]) == (EXAMPLE, derived.flavor.version)
    assert now["assessment"] == "good"
    assert 'VARIANT_ID="web-appliance"' in m.succeed("cat /etc/os-release")


def test_an_image_from_the_registry_is_made_a_disk_that_boots_and_serves(
    machine_factory, registry, derived
):
    """`invoke build --image HOST/REPO:TAG`: the derivative's image as a registry serves
    it (the way a user's own image arrives) is imported, finished and made a disk."""
    tag = f"{derived.flavor.version}-{derived.arch.name}"
    push_signed(derived.oci_layout, repository_for(registry, "imported"), tag)
    (image,) = build_from_image(
        f"{repository_for(registry, 'imported')}:{tag}", derived.arch.name, log=lambda _: None
    )
    assert image.flavor.name == EXAMPLE  # its io.cos.flavor label, not the repository's name
    m = machine_factory(image=image.disk_qcow2, boot=True)
    m.wait_for_unit("nginx.service")
    assert PAGE in m.succeed("curl -fsS http://localhost/")
    now = status(m)
    assert (now["flavor"], now["version"], now["assessment"]) == (
        EXAMPLE,
        derived.flavor.version,
        "good",
    )


def reboot_into_the_derivative(m) -> dict:
    """After `cos upgrade`: the new slot boots, serves the page and passes its trial."""
    m.reboot()
    m.wait_for_unit("cos-boot-assessment.service")
    m.wait_for_unit("nginx.service")
    assert PAGE in m.succeed("curl -fsS http://localhost/")
    now = status(m)
    assert (now["flavor"], now["assessment"]) == (EXAMPLE, "good")
    return now


def own_layers(image: ImageBuild, parent: ImageBuild) -> list[dict]:
    """The derivative's layers above its parent's (checked to start with them)."""

    def layers(build: ImageBuild) -> list[dict]:
        layout = build.oci_layout
        return oci.read_blob_json(layout, oci.top_descriptor(layout)["digest"])["layers"]

    below, mine = layers(parent), layers(image)
    assert mine[: len(below)] == below, "the derivative does not share the parent's layers"
    return mine[len(below) :]


@pytest.mark.slow
def test_a_machine_on_the_parent_upgrades_to_the_derivative_and_rolls_back(
    machine_factory, registry, derived
):
    parent = ImageBuild(load_flavor(PARENT), derived.arch, image_folder(PARENT, derived.arch.name))
    tag = f"{derived.flavor.version}-{derived.arch.name}"
    push_signed(
        derived.oci_layout,
        repository_for(registry, EXAMPLE),
        tag,
        identity=repository_for(GUEST_REGISTRY, EXAMPLE),
    )
    m = machine_factory(flavor=PARENT)
    m.fail("command -v nginx")
    out = m.succeed(
        f"cos upgrade --image {repository_for(GUEST_REGISTRY, EXAMPLE)}:{tag}", UPGRADE_TIMEOUT
    )
    assert "slot 3 holds" in out, out
    # only what the derivative added: the machine had the parent's layers in its slot
    pulled = status(m)["last_upgrade"]["pulled"]
    assert int(pulled.split()[0]) == sum(layer["size"] for layer in own_layers(derived, parent))
    now = reboot_into_the_derivative(m)
    assert now["slots"]["active"]["name"] == "3"
    m.succeed("cos rollback")
    m.reboot()
    back = status(m)
    assert (back["flavor"], back["version"]) == (PARENT, parent.flavor.version)
    assert back["slots"]["active"]["name"] == "2"
    m.fail("command -v nginx")


@pytest.mark.slow
def test_a_machine_on_the_parent_upgrades_to_what_push_image_pushed(
    machine_factory, registry, derived
):
    """`invoke push --image oci:DIR`: built from an OCI layout, signed and pushed as any
    flavor is, then a `cos upgrade` target like any other image."""
    (published,) = push_built_image(
        f"oci:{derived.oci_layout}", derived.arch.name, registry, seen_as=GUEST_REGISTRY,
        log=lambda _: None,
    )  # fmt: skip
    reference = published.reference.replace(registry, GUEST_REGISTRY)
    assert (
        reference
        == f"{repository_for(GUEST_REGISTRY, EXAMPLE)}:{derived.flavor.version}-{derived.arch.name}"
    )
    m = machine_factory(flavor=PARENT)
    out = m.succeed(f"cos upgrade --image {reference}", UPGRADE_TIMEOUT)
    assert "slot 3 holds" in out, out
    now = reboot_into_the_derivative(m)
    assert now["slots"]["active"]["digest"] == published.digest


@pytest.mark.slow
@pytest.mark.image
def test_a_containerfile_that_removes_the_agent_is_refused(tmp_path, vm_settings, vm_arch):
    """With the real parent image: buildah runs the step, the check after it names the
    Containerfile and what is gone, and the stage leaves no rootfs behind."""
    from toolkit import buildah, derivative
    from toolkit.arch import get_arch
    from toolkit.cache import StageCache, call_with_outputs
    from toolkit.cosign import ensure_keypair

    if vm_settings.flavor != PARENT:
        pytest.skip(f"the Containerfile here builds on {PARENT}")
    arch = get_arch(vm_arch)
    parent = ImageBuild(load_flavor(PARENT), arch, image_folder(PARENT, vm_arch))
    images = tmp_path / "images"
    shutil.copytree(parent.flavor.folder, images / PARENT)
    (images / "no-agent").mkdir()
    (images / "no-agent/flavor.yaml").write_text(
        f"name: no-agent\ndescription: x\nparent: {PARENT}\nversion: 1.0.0\n"
    )
    (images / "no-agent/Containerfile").write_text(
        f"FROM cos/{PARENT}\nRUN dpkg --purge --force-depends cos-agent\n"
    )
    flavor = load_flavor("no-agent", images)
    added = tmp_path / "added"
    buildah.build_containerfile(
        flavor, arch, parent.flavor.version, parent.oci_archive, parent.oci_layout, added,
        1700000000, log=lambda _: None,
    )  # fmt: skip
    layers, _ = buildah.added_layers(added)
    assert len(layers) == 1
    rootfs, finish = tmp_path / "rootfs", tmp_path / "finish.tar"
    function = partial(
        derivative.make_derived_rootfs, flavor, arch, parent.rootfs, added,
        ensure_keypair()[1], "test", 1700000000, rootfs, finish, log=lambda _: None,
    )  # fmt: skip
    with pytest.raises(CosError) as raised:
        StageCache(tmp_path).run(
            "rootfs", {"x": 1}, [rootfs, finish], partial(call_with_outputs, function)
        )
    assert str(raised.value) == (
        f"{flavor.containerfile}:2: RUN dpkg --purge --force-depends cos-agent: "
        "the image lacks what a cOS system needs: "
        "the agent (package cos-agent, /usr/bin/cos)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stamps", "added", "images"]


@pytest.mark.slow
@pytest.mark.image
def test_a_derivative_of_the_derivative_builds_on_both_of_their_layers(
    tmp_path, vm_settings, vm_arch, derived
):
    """A Containerfile FROM cos/web-appliance: the chain is built parent first (both
    cached here), and the image is the web-appliance's layers as they are plus its own."""
    from toolkit.arch import get_arch
    from toolkit.build import build_image
    from toolkit.packages import build_repository

    images = tmp_path / "images"
    for name in (PARENT, EXAMPLE):
        shutil.copytree(load_flavor(name).folder, images / name)
    (images / "web-motd").mkdir()
    (images / "web-motd/flavor.yaml").write_text(
        f"name: web-motd\ndescription: x\nparent: {EXAMPLE}\nversion: 0.2.0\n"
    )
    (images / "web-motd/Containerfile").write_text(
        f"FROM cos/{EXAMPLE}\nRUN echo 'on {EXAMPLE}' > /etc/motd\n"
    )
    try:
        repo = build_repository(log=lambda _: None)
        flavor = load_flavor("web-motd", images)
        child = build_image(flavor, get_arch(vm_arch), repo, log=lambda _: None)
        mine = own_layers(child, derived)  # checks that it starts with the web-appliance's
        assert len(mine) == 2  # the RUN step's layer and the finishing layer
        assert (child.rootfs / "etc/motd").read_text() == f"on {EXAMPLE}\n"
        assert (child.rootfs / "usr/sbin/nginx").exists()
        assert 'VARIANT_ID="web-motd"' in (child.rootfs / "usr/lib/os-release").read_text()
    finally:
        shutil.rmtree(image_folder("web-motd", vm_arch), ignore_errors=True)
