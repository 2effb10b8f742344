"""Containerfile flavors: images/<name>/Containerfile built FROM the parent flavor's image.

Three stages, after the parent's own build:
- containerfile: buildah (`bud --isolation chroot --storage-driver vfs`: no container
  engine, no cgroups) builds the Containerfile from the parent's OCI archive in a storage
  of its own; only the layers it added are kept, checked to sit on the parent's layers.
- rootfs: the parent's rootfs with those layers applied as a machine applies them
  (cos.layers), checked to still hold what a cOS system needs, then finished as every
  image is (os-release naming the derivative, no machine identity, the image key, the
  initramfs of whatever kernel it has now); what finishing changed becomes one more layer.
- oci: the parent's image, its layers shared as they are, plus the added layers and the
  finishing layer. A machine on the parent pulls only those to upgrade.
"""

import json
import os
import re
import stat
import subprocess
import tarfile
import tempfile
import time
from collections import deque
from pathlib import Path

from cos.layers import apply_layer
from toolkit import containerfile, oci
from toolkit.arch import Arch
from toolkit.cache import remove_tree
from toolkit.errors import CosError
from toolkit.flavors import Flavor, flavor_names
from toolkit.initramfs import INIT
from toolkit.rootfs import install_boot_files, seal
from toolkit.runner import run, system_env

ADDED_INFO = "image.json"  # in the containerfile stage's folder, beside the layer blobs
STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (?P<text>.*)$")
# What a cOS system cannot boot or upgrade without: (what, package, a file it installs).
REQUIRED = [
    ("the agent", "cos-agent", "usr/bin/cos"),
    ("the initramfs tool", "cos-initramfs", INIT),
    ("GRUB's menu", "cos-grub", "usr/share/cos/grub/grub.cfg"),
]


def storage_options(work: Path) -> list[str]:
    """A buildah storage of this build's own (vfs: plain folders, no overlay mounts)."""
    return ["--storage-driver", "vfs", "--root", str(work / "root"), "--runroot", str(work / "run")]


def build_containerfile(
    flavor: Flavor,
    arch: Arch,
    parent_version: str,
    parent_archive: Path,
    parent_layout: Path,
    out: Path,
    epoch: int,
    log=print,
) -> None:
    """The layers the Containerfile adds to the parent's image, in `out` (their blobs and
    ADDED_INFO: their diff ids and history, and the image's container config)."""
    assert flavor.containerfile is not None and flavor.parent is not None
    parsed = containerfile.parse(flavor.containerfile)
    text = containerfile.resolve(
        parsed, flavor.parent, parent_version, flavor_names(flavor.folder.parent), parent_archive
    )
    work = Path(tempfile.mkdtemp(prefix=".buildah-", dir=out.parent))
    try:
        rewritten = work / "Containerfile"
        rewritten.write_text(text)
        tag = f"localhost/cos-build/{flavor.name}:{arch.name}"
        bud = [
            "buildah", *storage_options(work), "bud", "--isolation", "chroot",
            "--platform", f"linux/{arch.oci}", "--timestamp", str(epoch),
            "-f", str(rewritten), "-t", tag, str(flavor.folder),
        ]  # fmt: skip
        steps = run_bud(parsed, bud, log)
        layout = work / "oci"
        run(
            ["buildah", *storage_options(work), "push", "--quiet", tag, f"oci:{layout}"],
            what=f"buildah push of {flavor.name} ({arch.name})",
            log=log,
            env=system_env(),
        )
        keep_added_layers(parsed.path, layout, parent_layout, out, steps)
    finally:
        remove_tree(work)


def run_bud(parsed: containerfile.Containerfile, command: list[str], log=print) -> list[dict]:
    """buildah bud, its STEP lines logged; a failed step is reported with the file, the
    line of its instruction and the step's output. Returns each step's text and seconds
    (the last one's until the image is committed)."""
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=system_env(), text=True, errors="replace",
        )  # fmt: skip
    except FileNotFoundError:
        raise CosError(
            f"{parsed.path}: buildah is not installed; run `invoke setup` (apt install buildah)"
        ) from None
    step_output: deque[str] = deque(maxlen=40)
    step = ""
    steps: list[dict] = []
    started = time.monotonic()
    for line in proc.stdout:
        line = line.rstrip("\n")
        match = STEP.match(line)
        if match:
            now = time.monotonic()
            if steps:
                steps[-1]["seconds"] = round(now - started, 2)
            step, step_output, started = match["text"], deque(maxlen=40), now
            steps.append({"step": step, "seconds": 0.0})
            log(f"  {line}")
        else:
            step_output.append(line)
    if proc.wait() == 0:
        if steps:
            steps[-1]["seconds"] = round(time.monotonic() - started, 2)
        return steps
    instruction = parsed.instruction_at_step(step) if step else None
    where = parsed.where(instruction) if instruction else str(parsed.path)
    what = instruction.text if instruction else step or "buildah bud"
    shown = "\n".join(f"  | {line}" for line in step_output)
    raise CosError(f"{where}: {what} failed (buildah exit {proc.returncode}); its output:\n{shown}")


def _image(layout: Path) -> tuple[dict, dict]:
    manifest = oci.read_blob_json(layout, oci.top_descriptor(layout)["digest"])
    return manifest, oci.read_blob_json(layout, manifest["config"]["digest"])


def keep_added_layers(
    source: Path, layout: Path, parent_layout: Path, out: Path, steps: list[dict]
) -> None:
    """From buildah's image in `layout`, the layers above the parent's into `out`. Its
    copies of the parent's layers are dropped (it compresses them anew, other bytes); the
    parent's own blobs are what the derivative's image shares."""
    manifest, config = _image(layout)
    _, parent_config = _image(parent_layout)
    below = parent_config["rootfs"]["diff_ids"]
    diff_ids = config["rootfs"]["diff_ids"]
    if diff_ids[: len(below)] != below:
        raise CosError(
            f"{source}: buildah's image does not start with the layers of the parent's image "
            f"({len(below)} layers); a derivative may only add layers"
        )
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    out.mkdir(parents=True)
    added = []
    for index, layer in enumerate(manifest["layers"][len(below) :], start=len(below)):
        if layer["mediaType"] != oci.MEDIA_LAYER:
            raise CosError(
                f"{source}: buildah wrote layer {layer['digest']} as {layer['mediaType']}"
            )
        name = layer["digest"].partition(":")[2]
        os.link(oci.blob_path(layout, layer["digest"]), out / name)
        created_by = history[index].get("created_by", "") if index < len(history) else ""
        added.append({"blob": name, "diff_id": diff_ids[index], "created_by": created_by})
    info = {"config": config.get("config", {}), "layers": added, "steps": steps}
    (out / ADDED_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def added_layers(folder: Path) -> tuple[list[oci.NewLayer], dict]:
    """The containerfile stage's layers (bottom first) and the image's container config."""
    info = json.loads((folder / ADDED_INFO).read_text())
    layers = [
        oci.NewLayer(folder / layer["blob"], layer["diff_id"], layer["created_by"])
        for layer in info["layers"]
    ]
    return layers, info["config"]


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
    `finish_tar`: what finishing changed, as a layer (uncompressed)."""
    run(["cp", "-a", "--reflink=auto", str(parent_rootfs), str(target)], what="copying the parent")
    layers, _config = added_layers(added)
    for number, layer in enumerate(layers, start=1):
        with layer.blob.open("rb") as f:
            apply_layer(
                iter(lambda f=f: f.read(1 << 20), b""),
                target,
                what=f"{flavor.containerfile}: layer {number} ({layer.created_by[:60]})",
            )
    check_system(target, str(flavor.containerfile), arch)
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


def check_system(rootfs: Path, source: str, arch: Arch) -> None:
    """CosError naming `source` (the Containerfile, the image) and every missing part, if
    the tree lacks what a cOS system boots and upgrades with."""
    packages = installed_packages(rootfs)
    missing = [
        f"{what} (package {package}, /{path})"
        for what, package, path in REQUIRED
        if package not in packages or not (rootfs / path).is_file()
    ]
    found = kernels(rootfs)
    if not found:
        missing.append("a kernel (/boot/vmlinuz-VERSION with /usr/lib/modules/VERSION)")
    grub = arch.grub_efi_package
    if grub not in packages:
        missing.append(f"GRUB's EFI modules (package {grub})")
    if missing:
        raise CosError(f"{source}: the image lacks what a cOS system needs: {'; '.join(missing)}")
    if len(found) > 1:
        raise CosError(
            f"{source}: the image has {len(found)} kernels ({', '.join(found)}); a cOS image "
            "boots one: remove the others"
        )


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
    parent_layout: Path,
    added: Path,
    finish_tar: Path,
    layout: Path,
    archive: Path,
    *,
    labels: dict[str, str],
    epoch: int,
    log=print,
) -> None:
    """The derivative's OCI image: the parent's, plus the added and the finishing layers."""
    layers, config = added_layers(added)
    with tempfile.TemporaryDirectory(dir=layout.parent) as scratch:
        finishing = oci.gzip_layer(finish_tar, Path(scratch), "cos toolkit: finishing layer")
        oci.write_derived_image(
            parent_layout, layout, archive, [*layers, finishing],
            labels=labels, epoch=epoch, container_config=config, log=log,
        )  # fmt: skip
