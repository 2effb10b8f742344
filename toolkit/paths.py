"""Where things live. Every location can be moved with an environment variable."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES_DIR = REPO_ROOT / "packages"
IMAGES_DIR = REPO_ROOT / "images"


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def build_dir() -> Path:
    """All build output: git-ignored, one folder."""
    return _env_path("COS_BUILD_DIR", REPO_ROOT / "build")


def cache_dir() -> Path:
    """Downloads kept across checkouts (apt archives), outside the checkout."""
    return _env_path("COS_CACHE_DIR", Path.home() / ".cache" / "cos")


def keys_dir() -> Path:
    """The project's signing keys (apt repository key, image key)."""
    return _env_path("COS_KEYS_DIR", Path.home() / ".local" / "share" / "cos" / "keys")
