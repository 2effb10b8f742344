"""The agent's way to cos-cloud-config: the before-/after-install, -upgrade and -reset
stages it runs, `cos run-stage` and `cos cloud-config validate`. In this process through
cos-cloud-config's entry point when it is importable (a second Python start and its
imports cost 3-6 s per stage under emulation), else its command."""

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cos.errors import CosError
from cos.progress import Progress
from cos.runner import run


def cloud_config(argv: list[str], what: str) -> int:
    """cos-cloud-config with argv; its exit status (its messages are printed as it goes)."""
    try:
        from cos_cloud_config.runner import main
    except ImportError:
        if shutil.which("cos-cloud-config") is None:
            raise CosError(f"{what}: cos-cloud-config is not installed") from None
        return subprocess.run(["cos-cloud-config", *argv], check=False).returncode
    return main(argv)


def run_stage(
    stage: str, progress: Progress, root: Path | None = None, files: tuple[Path, ...] = ()
) -> None:
    """Run `stage` with this system's configs and `files`, acting on `root` (a target being
    installed or upgraded, see target_root) when given; nothing when no cloud-config runner
    is installed. Its steps' failures are reported and do not stop the agent unless the
    config asks for strict mode: then a CosError."""
    try:
        import cos_cloud_config  # noqa: F401
    except ImportError:
        if shutil.which("cos-cloud-config") is None:
            return
    argv = [stage, *(["--root", str(root)] if root else [])]
    argv += [item for path in files for item in ("--file", str(path))]
    with progress.step(f"running the {stage} stage" + (f" on {root}" if root else "")):
        if cloud_config(argv, f"the {stage} stage") != 0:
            raise CosError(f"the {stage} stage failed in strict mode (see above)")


@contextlib.contextmanager
def target_root(slot_image: Path, oem: Path | None, persistent: Path | None) -> Iterator[Path]:
    """The system in `slot_image` as it will boot, for a hook to act on: the image read-only
    under a throwaway tmpfs (what a hook writes in / is gone at the first boot, as at every
    boot), with the target's COS_OEM at /oem and COS_PERSISTENT at /usr/local, where
    what it writes lasts (a file in /oem is a config applied at every boot)."""
    Path("/run/cos").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="target-", dir="/run/cos") as scratch:
        base, upper, root = Path(scratch) / "image", Path(scratch) / "upper", Path(scratch) / "root"
        mounted: list[Path] = []

        def mount(argv: list[str], where: Path, what: str) -> None:
            where.mkdir(parents=True, exist_ok=True)
            run(["mount", *argv, str(where)], what=what)
            mounted.append(where)

        try:
            mount(["-o", "loop,ro", str(slot_image)], base, f"mounting {slot_image}")
            mount(["-t", "tmpfs", "target-upper"], upper, "mounting a tmpfs")
            (upper / "data").mkdir()
            (upper / "work").mkdir()
            layers = f"lowerdir={base},upperdir={upper}/data,workdir={upper}/work"
            mount(["-t", "overlay", "-o", layers, "target-root"], root, "the target's root")
            for source, where in ((oem, "oem"), (persistent, "usr/local")):
                if source is not None:
                    mount(["--bind", str(source)], root / where, f"binding {source}")
            yield root
        finally:
            for where in reversed(mounted):
                run(["umount", str(where)], what=f"unmounting {where}")


RECORDS = Path("/run/cos/cloud-config")  # written by cos-cloud-config after each stage


def last_runs(records: Path = RECORDS) -> dict[str, dict]:
    """The last run of each stage in this boot: how long, how many steps, what went wrong."""
    import json

    runs = {}
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        try:
            runs[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            runs[path.stem] = {"errors": [f"{path}: unreadable: {exc}"]}
    return dict(sorted(runs.items(), key=lambda item: item[1].get("started", 0)))


def describe_run(stage: str, run: dict) -> list[str]:
    errors = run.get("errors", [])
    counts = f"{run.get('applied', 0)} applied, {run.get('skipped', 0)} skipped"
    head = f"{stage}: {counts}, {len(errors)} error(s), {run.get('seconds', 0):.2f} s"
    return [head, *(f"  {error}" for error in errors)]
