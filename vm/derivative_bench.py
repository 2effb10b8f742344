"""`invoke bench`'s derivative figures: a machine on the parent flavor upgrades to each
Containerfile flavor built on it (toolkit.bench.derivatives_of), from a registry of its
own; what it pulls should be the derivative's own layers only."""

from collections.abc import Callable

from toolkit import oci
from toolkit.arch import get_arch
from toolkit.bench import derivatives_of
from toolkit.build import ImageBuild, image_folder
from toolkit.flavors import load_flavor
from toolkit.publish import push_signed, repository_for
from vm.upgrade_bench import GUEST_REGISTRY, upgrade_to


def layer_sizes(image: ImageBuild) -> list[int]:
    manifest = oci.read_blob_json(image.oci_layout, oci.top_descriptor(image.oci_layout)["digest"])
    return [layer["size"] for layer in manifest["layers"]]


def report_derivatives(flavor: str, arch: str, log: Callable[[str], None] = print) -> None:
    parent = ImageBuild(load_flavor(flavor), get_arch(arch), image_folder(flavor, arch))
    for derived_flavor in derivatives_of(flavor):
        if arch not in derived_flavor.architectures:
            continue
        derived = ImageBuild(
            derived_flavor, get_arch(arch), image_folder(derived_flavor.name, arch)
        )
        tag = f"{derived_flavor.version}-{arch}"

        def publish(address: str, derived=derived, tag=tag) -> str:
            repository = repository_for(address, derived.flavor.name)
            identity = repository_for(GUEST_REGISTRY, derived.flavor.name)
            return push_signed(derived.oci_layout, repository, tag, identity=identity).reference

        figures = upgrade_to(flavor, arch, publish)
        own = layer_sizes(derived)[len(layer_sizes(parent)) :]
        log(f"{arch} upgrade from {flavor} to the derivative {derived_flavor.name}")
        log(f"  cos upgrade to switched slot   {figures['upgrade']:6.1f} s")
        log(f"  reboot to SSH on the new slot  {figures['reboot']:6.1f} s")
        log(
            f"  pulled {figures['pulled'] / 1e6:.2f} MB of the image's "
            f"{figures['image'] / 1e6:.1f} MB; its own layers: "
            f"{' + '.join(f'{n / 1e3:.1f}' for n in own)} kB"
        )
