"""The containerfile stage of a Containerfile flavor: buildah builds the Containerfile from
the parent's OCI archive (`bud --isolation chroot`, a vfs storage of the build's own: no
container engine, no cgroups), and only the layers it added are kept, checked to sit on
the parent's layers (toolkit.derivative makes the image from them).

`--layers` gives each RUN, COPY and ADD its own layer, as other image builders do, so a
layer that breaks the system is named by the file and line of the instruction that made
it."""

import json
import os
import re
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path

from toolkit import containerfile, oci
from toolkit.arch import Arch
from toolkit.cache import remove_tree
from toolkit.errors import CosError
from toolkit.flavors import Flavor, flavor_names
from toolkit.runner import run, system_env

ADDED_INFO = "image.json"  # in the containerfile stage's folder, beside the layer blobs
STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (?P<text>.*)$")


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
            "buildah", *storage_options(work), "bud", "--isolation", "chroot", "--layers",
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
        keep_added_layers(parsed, layout, parent_layout, out, steps)
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
    parsed: containerfile.Containerfile,
    layout: Path,
    parent_layout: Path,
    out: Path,
    steps: list[dict],
) -> None:
    """From buildah's image in `layout`, the layers above the parent's into `out`, each
    with the instruction that made it. Its copies of the parent's layers are dropped (it
    compresses them anew, other bytes); the parent's own blobs are what the derivative's
    image shares."""
    source = parsed.path
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
    made_by = parsed.layer_instructions()
    if len(made_by) != len(manifest["layers"]) - len(below):
        made_by = []  # not one layer per instruction: name the file only
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
        instruction = made_by[index - len(below)] if made_by else None
        # continuation lines joined as buildah shows them: spaces collapsed
        text = " ".join(instruction.text.split()) if instruction else ""
        origin = f"{parsed.where(instruction)}: {text}" if instruction else str(source)
        added.append(
            {"blob": name, "diff_id": diff_ids[index], "created_by": created_by, "origin": origin}
        )
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


def layer_origins(folder: Path) -> list[str]:
    """For each of the containerfile stage's layers, `FILE:LINE: INSTRUCTION` of the
    instruction that made it (the file alone when that is not known)."""
    return [layer["origin"] for layer in json.loads((folder / ADDED_INFO).read_text())["layers"]]


def added_steps(folder: Path) -> list[dict]:
    """buildah's steps of the containerfile stage: {"step": text, "seconds": float}."""
    return json.loads((folder / ADDED_INFO).read_text()).get("steps", [])
