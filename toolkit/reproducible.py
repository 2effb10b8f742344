"""The one timestamp a build writes everywhere (reproducible-builds.org's SOURCE_DATE_EPOCH).

`SOURCE_DATE_EPOCH` from the environment wins; without it, the time of the last git commit
that touched the given sources (the whole checkout by default); outside a git checkout, a
fixed date. So the same commit always builds the same bytes, and a commit that touches none
of a stage's sources leaves its timestamp, and so its cache, alone.
"""

import os
import subprocess
from pathlib import Path

from toolkit import paths
from toolkit.errors import CosError

VARIABLE = "SOURCE_DATE_EPOCH"
# 2024-01-01T00:00:00Z: when neither the variable nor git answers (a source tarball).
DEFAULT_EPOCH = 1704067200


def source_date_epoch(*sources: Path) -> int:
    """Seconds since 1970 for every timestamp of what is built from `sources`."""
    value = os.environ.get(VARIABLE, "").strip()
    if value:
        if not value.isdigit():
            raise CosError(f"{VARIABLE} must be a whole number of seconds, got {value!r}")
        return int(value)
    result = subprocess.run(
        ["git", "-C", str(paths.REPO_ROOT), "log", "-1", "--format=%ct", "--", *map(str, sources)],
        capture_output=True,
        text=True,
        check=False,
    )
    committed = result.stdout.strip()
    return int(committed) if result.returncode == 0 and committed.isdigit() else DEFAULT_EPOCH
