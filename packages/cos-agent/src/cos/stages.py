"""The agent's way to cos-cloud-config: the before-/after-install, -upgrade and -reset
stages it runs, `cos run-stage` and `cos cloud-config validate`. In this process through
cos-cloud-config's entry point when it is importable (a second Python start and its
imports cost 3-6 s per stage under emulation), else its command."""

import shutil
import subprocess
from pathlib import Path

from cos.errors import CosError
from cos.progress import Progress


def cloud_config(argv: list[str], what: str) -> int:
    """cos-cloud-config with argv; its exit status (its messages are printed as it goes)."""
    try:
        from cos_cloud_config.runner import main
    except ImportError:
        if shutil.which("cos-cloud-config") is None:
            raise CosError(f"{what}: cos-cloud-config is not installed") from None
        return subprocess.run(["cos-cloud-config", *argv], check=False).returncode
    return main(argv)


def run_stage(stage: str, progress: Progress, root: Path | None = None) -> None:
    """Run `stage`, acting on `root` (a target being installed or upgraded) when given;
    nothing when no cloud-config runner is installed. Its steps' failures are reported and
    do not stop the agent unless the config asks for strict mode: then a CosError."""
    try:
        import cos_cloud_config  # noqa: F401
    except ImportError:
        if shutil.which("cos-cloud-config") is None:
            return
    argv = [stage, *(["--root", str(root)] if root else [])]
    with progress.step(f"running the {stage} stage" + (f" on {root}" if root else "")):
        if cloud_config(argv, f"the {stage} stage") != 0:
            raise CosError(f"the {stage} stage failed in strict mode (see above)")


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
    return runs


def describe_run(stage: str, run: dict) -> list[str]:
    errors = run.get("errors", [])
    counts = f"{run.get('applied', 0)} applied, {run.get('skipped', 0)} skipped"
    head = f"{stage}: {counts}, {len(errors)} error(s), {run.get('seconds', 0):.2f} s"
    return [head, *(f"  {error}" for error in errors)]
