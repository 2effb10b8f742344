"""`cos upgrade`: pull a signed OCI image by digest, write it as a new slot, switch to it
with one atomic rename, and arm the boot assessment for that slot only.

Order, so that a power cut at any instant leaves a machine that boots the old or the new
system: (1) the new slot is written under a temporary name and synced, (2) the trial is
armed for its name (ignored by GRUB while another slot is active), (3) the pointer is
replaced, (4) the old passive slot is deleted. Leftovers of an interrupted run are
removed by the next one.
"""

import fcntl
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cos import oci, registry, slots
from cos.errors import CosError
from cos.files import fsync_dir, read_json, write_json
from cos.layers import apply_layer, remove_added
from cos.progress import Progress
from cos.runner import run
from cos.signature import repository_of, verify
from cos.stages import run_stage, target_root

KEYS_DIR = Path("/etc/cos/keys")
LOCK = Path("/run/lock/cos-upgrade.lock")
WORK = Path("/run/cos/upgrade")
SLOT_SIZE_LABEL = "io.cos.slot-size"  # bytes the image needs as a slot, set by the build
HEADROOM = 1.25  # without that label: the running slot's size, with room to grow
MiB = 1 << 20


@dataclass
class Plan:
    reference: str
    host: str
    repo: str
    digest: str  # what the reference resolved to: the signed digest (image or index)
    manifest_digest: str  # this arch's image manifest
    config: dict
    layers: list[dict] = field(default_factory=list)

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.repo}"

    @property
    def download_bytes(self) -> int:
        return sum(int(layer.get("size", 0)) for layer in self.layers)

    @property
    def labels(self) -> dict:
        return self.config.get("config", {}).get("Labels") or {}


CONFIG_FILES = (Path("/oem/cos/upgrade.conf"), Path("/etc/cos/upgrade.conf"))


def default_reference() -> str:
    """IMAGE= from the user's config on COS_OEM, else from the flavor's in the image."""
    for path in CONFIG_FILES:
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "IMAGE" and value.strip():
                    return value.strip()
    raise CosError(
        "no image given: use --image REF, or set IMAGE=REF in "
        + " or ".join(map(str, CONFIG_FILES))
    )


def machine_arch() -> str:
    machine = os.uname().machine
    if machine not in oci.OCI_ARCH:
        raise CosError(f"this machine's arch {machine!r} is not one cOS builds")
    return oci.OCI_ARCH[machine]


def resolve(reference: str, arch: str) -> Plan:
    """Resolve the reference once; everything after is fetched by digest and checked."""
    host, repo, _ = registry.parse_reference(reference)
    digest = registry.resolve_digest(reference)
    media, data, _ = registry.get_manifest(f"{host}/{repo}@{digest}")
    document = oci.load_json(data, f"{reference}@{digest}")
    manifest_digest = digest
    if oci.is_index(media, document):
        chosen = oci.manifest_for_arch(document, arch, f"{reference}@{digest}")
        manifest_digest = chosen["digest"]
        _, data, _ = registry.get_manifest(f"{host}/{repo}@{manifest_digest}")
        document = oci.load_json(data, f"{reference}@{manifest_digest}")
    where = f"{reference}@{manifest_digest}"
    try:
        config_digest = document["config"]["digest"]
        layers = list(document["layers"])
    except (KeyError, TypeError):
        raise CosError(f"{where}: not an image manifest (no config or layers)") from None
    config = oci.load_json(
        registry.get_blob(host, repo, config_digest, f"{where}: config"), f"{where}: config"
    )
    if config.get("architecture") != arch:
        raise CosError(
            f"{where}: wrong arch: the image is for {config.get('architecture')!r}, "
            f"this machine is {arch}"
        )
    for index, layer in enumerate(layers):
        if layer.get("mediaType") not in oci.GZIP_LAYER_TYPES:
            raise CosError(f"{where}: layer {index + 1} has media type {layer.get('mediaType')!r}")
    return Plan(reference, host, repo, digest, manifest_digest, config, layers)


def check_signature(plan: Plan, keys_dir: Path | None = None) -> Path:
    """The key that verified one of the image's signatures; CosError says why none did."""
    keys_dir = keys_dir or KEYS_DIR
    keys = sorted(keys_dir.glob("*.pub"))
    if not keys:
        raise CosError(f"{keys_dir}: no public keys (*.pub) to verify images with")
    signatures = registry.fetch_signatures(plan.repository, plan.digest)
    reasons = []
    for payload, signature in signatures:
        for key in keys:
            try:
                verify(
                    payload, signature, key.read_bytes(), plan.digest, where=str(key),
                    expected_repository=repository_of(plan.repository),
                )  # fmt: skip
                return key
            except CosError as e:
                reasons.append(str(e))
    raise CosError(
        f"{plan.repository}@{plan.digest}: wrongly signed: none of its {len(signatures)} "
        f"signature(s) verifies with {', '.join(map(str, keys))}: "
        + "; ".join(dict.fromkeys(reasons))
    )


def resolve_verified(reference: str, check: bool, progress: Progress) -> Plan:
    """The reference resolved once, and its signature checked unless `check` is off (said
    on stderr): what every verb that writes an image from a registry starts with."""
    progress.stage(f"resolving {reference}")
    plan = resolve(reference, machine_arch())
    progress.stage(
        f"{plan.repository}@{plan.digest}: {len(plan.layers)} layers, "
        f"{plan.download_bytes / MiB:.1f} MiB"
    )
    if check:
        key = check_signature(plan)
        progress.stage(f"signature verified with {key}")
    else:
        print(
            f"WARNING: --no-verify: {plan.repository}@{plan.digest} is NOT checked against "
            f"the keys in {KEYS_DIR}; anyone who can write to that registry decides what "
            "this machine runs",
            file=sys.stderr,
        )
    return plan


@contextmanager
def one_upgrade_at_a_time():
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise CosError(f"another cos upgrade is running ({holder}); try again later") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        yield


def slot_bytes(plan: Plan, running_image: Path) -> int:
    label = str(plan.labels.get(SLOT_SIZE_LABEL, ""))
    if label.isdigit():
        return int(label)
    return int(running_image.stat().st_size * HEADROOM) // MiB * MiB


def check_space(root: Path, needed: int) -> None:
    available = shutil.disk_usage(root).free
    if needed > available:
        raise CosError(
            f"COS_STATE: not enough space for the new system: needed {needed // MiB} MiB, "
            f"available {available // MiB} MiB"
        )


@dataclass
class Start:
    """How the new slot starts. From scratch (keep=0), or as a copy of the running slot with
    the running image's layers above the first `keep` taken off: possible when those
    layers only added files and the slot recorded which (N.layers.json)."""

    keep: int = 0
    take_off: list[dict] = field(default_factory=list)  # records of the layers to take off
    kept: list[dict] = field(default_factory=list)  # records of the layers kept, above the first


def plan_start(root: Path, running: str, plan: Plan) -> Start:
    have = slots.slot_info(root, running).get("layers") or []
    want = [layer["digest"] for layer in plan.layers]
    keep = 0
    while keep < min(len(have), len(want)) and have[keep] == want[keep]:
        keep += 1
    if keep == 0:
        return Start()
    records = {
        r["digest"]: r for r in read_json(slots.layers_path(root, running)).get("layers", [])
    }
    above = [records.get(digest) for digest in have[keep:]]
    if not all(r and r.get("added_only") for r in above):
        return Start()  # a layer to take off replaced files below it, or is unrecorded
    kept = [records[d] for d in have[1:keep] if d in records]
    return Start(keep, [r for r in above if r], kept)


def write_slot(
    plan: Plan, root: Path, name: str, size: int, progress: Progress, running: Path, start: Start
) -> list[dict]:
    """Slot `name` made from the image's layers; it appears under its name only whole.
    Returns the records of its layers above the first (for N.layers.json)."""
    final = slots.image_path(root, name)
    partial = final.with_name(f".{final.name}.new")
    mountpoint = WORK / name
    if start.keep:
        progress.stage(f"copying {running.name}: it holds layers 1-{start.keep} already")
        run(["cp", "--sparse=always", str(running), str(partial)], what=f"copying {running}")
        if partial.stat().st_size < size:
            os.truncate(partial, size)
            run(["resize2fs", "-f", str(partial)], what=f"growing slot {name}")
    else:
        with open(partial, "wb") as f:
            f.truncate(size)
        run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "COS_SYSTEM", "-O", "^has_journal",
             "-m", "0", str(partial)],
            what=f"making the file system of slot {name}",
        )  # fmt: skip
    mountpoint.mkdir(parents=True, exist_ok=True)
    run(["mount", "-o", "loop", str(partial), str(mountpoint)], what=f"mounting slot {name}")
    records = list(start.kept)
    try:
        for record in reversed(start.take_off):
            progress.stage(f"taking off layer {record['digest']} of {running.name}")
            remove_added(mountpoint, record["paths"])
        for index, layer in enumerate(plan.layers[start.keep :], start=start.keep):
            what = f"layer {index + 1}/{len(plan.layers)} {layer['digest']}"
            progress.stage(f"pulling and unpacking {what} ({int(layer['size']) / MiB:.1f} MiB)")
            chunks = registry.blob_chunks(plan.host, plan.repo, layer["digest"], what)
            applied = apply_layer(
                progress.counted(chunks, what, int(layer["size"])), mountpoint, what
            )
            if index:
                records.append(
                    {"digest": layer["digest"], "added_only": applied.added_only,
                     "paths": applied.paths}
                )  # fmt: skip
    finally:
        run(["umount", str(mountpoint)], what=f"unmounting slot {name}")
        mountpoint.rmdir()
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.rename(partial, final)
    fsync_dir(final.parent)
    return records


def upgrade(
    reference: str, check: bool = True, dry_run: bool = False, progress: Progress | None = None
) -> str:
    progress = progress or Progress()
    with one_upgrade_at_a_time():
        boot = slots.current_boot()
        plan = resolve_verified(reference, check, progress)
        with slots.state_partition(writable=not dry_run) as root:
            pointer = slots.read_pointer(root)
            if slots.booted_name(boot) != pointer.active:
                raise CosError(
                    f"booted from {boot.get('image', 'an unknown image')}, not the active slot "
                    f"{pointer.active}: boot the active slot to upgrade"
                )
            if not dry_run:
                for leftover in slots.leftovers(root, pointer):
                    progress.stage(f"removing {leftover.name}, left by an interrupted upgrade")
                    leftover.unlink()
            running = slots.image_path(root, pointer.active)
            start = plan_start(root, pointer.active, plan)
            pulled = sum(int(layer["size"]) for layer in plan.layers[start.keep :])
            size = slot_bytes(plan, running)
            if start.keep:  # the new slot starts as a copy of the running one
                size = max(size, running.stat().st_size)
            check_space(root, size)
            name = slots.next_name(root)
            if dry_run:
                return (
                    f"would write slot {name} ({size // MiB} MiB) from {plan.repository}@"
                    f"{plan.digest}, pulling {pulled / MiB:.1f} of "
                    f"{plan.download_bytes / MiB:.1f} MiB, and make it active; slot "
                    f"{pointer.active} would be passive"
                )
            run_stage("before-upgrade", progress)
            try:
                records = write_slot(plan, root, name, size, progress, running, start)
                write_json(slots.layers_path(root, name), {"layers": records})
                write_json(slots.info_path(root, name), slot_facts(plan, name))
                # Before the switch: a hook that fails in strict mode leaves nothing switched.
                live = [Path(p) if os.path.ismount(p) else None for p in ("/oem", "/usr/local")]
                with target_root(slots.image_path(root, name), *live) as new_root:
                    run_stage("after-upgrade", progress, root=new_root)
            except BaseException:
                for path in slots.leftovers(root, pointer):
                    path.unlink()
                raise
            progress.stage(f"slot {name} written; switching")
            slots.update_grubenv(
                cos_tentative=name, cos_attempts="", cos_failed="", cos_fail_reason="",
                next_entry="",
            )  # fmt: skip
            slots.write_pointer(root, slots.Pointer(active=name, passive=pointer.active))
            for old in slots.files_of(root, pointer.passive):
                old.unlink()
            slots.record(
                root, "upgrade", from_slot=pointer.active, to_slot=name,
                image=plan.reference, digest=plan.digest,
                pulled=f"{pulled} of {plan.download_bytes} bytes",
            )  # fmt: skip
    return (
        f"slot {name} holds {plan.repository}@{plan.digest} (pulled {pulled / MiB:.1f} of "
        f"{plan.download_bytes / MiB:.1f} MiB) and boots next, as a trial: it falls back to "
        f"slot {pointer.active} unless it comes up healthy. Reboot to start it."
    )


def slot_facts(plan: Plan, name: str) -> dict:
    return {
        "name": name,
        "flavor": plan.labels.get("io.cos.flavor", ""),
        "version": plan.labels.get("org.opencontainers.image.version", ""),
        "image": plan.reference,
        "digest": plan.digest,
        "manifest": plan.manifest_digest,
        "layers": [layer["digest"] for layer in plan.layers],
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
