"""Running a cloud-config stage (before-/after-install, -upgrade, -reset) from the agent:
through cos-cloud-config's own entry point in this process when it is importable (a
second Python start and its imports cost 3-6 s per stage under emulation), else its
command."""

import shutil

from cos.errors import CosError
from cos.progress import Progress
from cos.runner import run


def run_stage(stage: str, progress: Progress) -> None:
    """Run `stage`; nothing when no cloud-config runner is installed. A failing stage is a
    CosError (its own messages are printed above)."""
    try:
        from cos_cloud_config.runner import main as cloud_config
    except ImportError:
        if shutil.which("cos-cloud-config") is None:
            return
        cloud_config = None
    with progress.step(f"running the {stage} stage"):
        if cloud_config is None:
            run(["cos-cloud-config", stage], what=f"the {stage} stage")
        elif cloud_config([stage]) != 0:
            raise CosError(f"the {stage} stage failed (cos-cloud-config {stage}: see above)")
