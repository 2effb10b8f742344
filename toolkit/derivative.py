"""Containerfile flavors: images/<name>/Containerfile built FROM the parent flavor's image.

Three stages, after the parent's own build:
- containerfile (toolkit.buildah): buildah builds the Containerfile from the parent's OCI
  archive; only the layers it added are kept, checked to sit on the parent's layers.
- rootfs: the parent's rootfs with those layers applied as a machine applies them
  (cos.layers), checked to still hold what a cOS system needs, then finished as every
  image is (os-release naming the derivative, no machine identity, the image key, the
  initramfs of whatever kernel it has now); what finishing changed becomes one more layer.
- oci: the parent's image, its layers shared as they are, plus the added layers and the
  finishing layer. A machine on the parent pulls only those to upgrade.
"""

import os
import stat
import tarfile
import tempfile
from pathlib import Path

from cos.layers import apply_layer
from toolkit import oci
from toolkit.arch import Arch
from toolkit.buildah import added_layers, layer_origins
from toolkit.errors import CosError
from toolkit.flavors import Flavor
from toolkit.initramfs import INIT
from toolkit.rootfs import install_boot_files, seal
from toolkit.runner import run

# What a cOS system cannot boot or upgrade without: (what, package, a file it installs).
REQUIRED = [
    ("the agent", "cos-agent", "usr/bin/cos"),
    ("the initramfs tool", "cos-initramfs", INIT),
    ("GRUB's menu", "cos-grub", "usr/share/cos/grub/grub.cfg"),
]


def make_derived_rootfs(
    flavor: Flavor,
    arch: Arch,
    parent_rootfs: Path,
    added: Path,
    image_key: Path,
    build_id: str,
    epoch: int,
    target: Path,
    finish_tar: Path,
    log=print,
) -> None:
    """`target`: the parent's rootfs with the added layers applied, checked and finished;
    `finish_tar`: what finishing changed, as a layer (uncompressed). The system is checked
    after each layer, so what is missing at the end is blamed on the instruction that
    last took it away (a later layer may put back what an earlier one removed)."""
    run(["cp", "-a", "--reflink=auto", str(parent_rootfs), str(target)], what="copying the parent")
    layers, _config = added_layers(added)
    origins = layer_origins(added)
    blame: dict[str, tuple[str, str]] = {}  # kind -> (the layer that left it, its text now)
    for number, (layer, origin) in enumerate(zip(layers, origins, strict=True), start=1):
        apply_layers(target, [layer], origin, first=number)
        blame = {
            kind: (blame[kind][0] if kind in blame else origin, text)
            for kind, text in system_problems(target, arch).items()
        }
    if blame:
        raise CosError(
            "\n".join(
                f"{origin}: {describe([text for o, text in blame.values() if o == origin])}"
                for origin in dict.fromkeys(origins)  # in layer order, each once
                if any(o == origin for o, _ in blame.values())
            )
        )
    finish_as_layer(target, str(flavor.containerfile), flavor, arch, image_key, build_id, epoch,
                    finish_tar, log)  # fmt: skip


def apply_layers(target: Path, layers: list[oci.NewLayer], source: str, first: int = 1) -> None:
    """Layers (gzip tar blobs, bottom first) applied over `target` as a machine applies
    them; a bad one is named with `source` and its number (the first is `first`)."""
    for number, layer in enumerate(layers, start=first):
        with layer.blob.open("rb") as f:
            apply_layer(
                iter(lambda f=f: f.read(1 << 20), b""),
                target,
                what=f"{source}: layer {number} ({layer.created_by[:60]})",
            )


def finish_as_layer(
    target: Path,
    source: str,
    flavor: Flavor,
    arch: Arch,
    image_key: Path,
    build_id: str,
    epoch: int,
    finish_tar: Path,
    log=print,
) -> None:
    """Check that `target` (made from `source`) holds a cOS system, finish it as every
    image is, and write what finishing changed as a layer tar."""
    check_system(target, source, arch)
    before = snapshot(target)
    seal(target, flavor, arch, build_id)
    install_boot_files(target, image_key)
    changed, removed = changes(before, snapshot(target))
    write_layer_tar(target, changed, removed, finish_tar, epoch)
    log(f"finishing layer: {len(changed)} entries written, {len(removed)} removed")


def installed_packages(rootfs: Path) -> set[str]:
    status = rootfs / "var/lib/dpkg/status"
    if not status.is_file():
        return set()
    installed = set()
    for stanza in status.read_text(errors="replace").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            installed.add(fields["Package"])
    return installed


def kernels(rootfs: Path) -> list[str]:
    """Kernel versions with both their modules and their image in /boot."""
    modules = rootfs / "usr/lib/modules"
    found = sorted(p.name for p in modules.iterdir() if p.is_dir()) if modules.is_dir() else []
    return [v for v in found if (rootfs / f"boot/vmlinuz-{v}").is_file()]


LACKS = "lacks "  # marks a missing part among system_problems


def system_problems(rootfs: Path, arch: Arch) -> dict[str, str]:
    """What keeps the tree from being a cOS system that boots and upgrades, by kind (a
    stable key, the text may change from layer to layer): each missing part (its text
    LACKS + what), and more than one kernel."""
    packages = installed_packages(rootfs)
    problems = {
        package: f"{LACKS}{what} (package {package}, /{path})"
        for what, package, path in REQUIRED
        if package not in packages or not (rootfs / path).is_file()
    }
    found = kernels(rootfs)
    if not found:
        problems["kernel"] = (
            f"{LACKS}a kernel (/boot/vmlinuz-VERSION with /usr/lib/modules/VERSION)"
        )
    if arch.grub_efi_package not in packages:
        problems["grub-efi"] = f"{LACKS}GRUB's EFI modules (package {arch.grub_efi_package})"
    if len(found) > 1:
        problems["kernels"] = (
            f"the image has {len(found)} kernels ({', '.join(found)}); a cOS image boots one: "
            "remove the others"
        )
    return problems


def describe(problems: list[str]) -> str:
    missing = [p.removeprefix(LACKS) for p in problems if p.startswith(LACKS)]
    others = [p for p in problems if not p.startswith(LACKS)]
    lacks = [f"the image lacks what a cOS system needs: {'; '.join(missing)}"] if missing else []
    return "; ".join(lacks + others)


def check_system(rootfs: Path, source: str, arch: Arch) -> None:
    """CosError naming `source` (the Containerfile, the image) and every problem, if the
    tree is not a cOS system that boots and upgrades."""
    problems = system_problems(rootfs, arch)
    if problems:
        raise CosError(f"{source}: {describe(list(problems.values()))}")


Entry = tuple[int, int, int, int, int, str]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry under root: mode, owner, group, size, mtime and link target."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
            entries[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, link)
    return entries


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> tuple[list[str], list[str]]:
    """(entries new or changed, parents first; entries gone, without those inside a gone
    folder: its whiteout removes them)."""
    changed = sorted(p for p, e in after.items() if before.get(p) != e)
    gone = sorted(p for p in before if p not in after)
    removed = [p for p in gone if os.path.dirname(p) not in before or os.path.dirname(p) in after]
    return changed, removed


def write_layer_tar(
    root: Path, changed: list[str], removed: list[str], dest: Path, epoch: int
) -> None:
    """A layer tar: the changed entries as tar_directory writes them, then a whiteout for
    each removed one."""
    oci.tar_directory(root, dest, epoch, changed)
    with tarfile.open(dest, "a", format=tarfile.PAX_FORMAT) as tar:
        for path in removed:
            folder, name = os.path.split(path)
            info = tarfile.TarInfo(os.path.join(folder, f".wh.{name}"))
            info.mtime = epoch
            tar.addfile(info)


def write_derived_oci(
    base_layout: Path,
    layers: list[oci.NewLayer],
    container_config: dict | None,
    finish_tar: Path,
    layout: Path,
    archive: Path,
    *,
    labels: dict[str, str],
    epoch: int,
    log=print,
) -> None:
    """The image: the base's layers as they are, plus `layers` and the finishing layer
    (none when finishing changed nothing, as for an image that was finished already)."""
    with tarfile.open(finish_tar) as tar:
        changed = tar.next() is not None
    with tempfile.TemporaryDirectory(dir=layout.parent) as scratch:
        finishing = (
            [oci.gzip_layer(finish_tar, Path(scratch), "cos toolkit: finishing layer")]
            if changed
            else []
        )
        oci.write_derived_image(
            base_layout, layout, archive, [*layers, *finishing],
            labels=labels, epoch=epoch, container_config=container_config, log=log,
        )  # fmt: skip
