"""Flavors: images/<flavor>/flavor.yaml, validated, with parent flavors merged in."""

import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import paths
from toolkit.arch import ARCHES
from toolkit.errors import CosError
from toolkit.schema import Fields, load_yaml_mapping

DEFAULT_FLAVOR = "debian-trixie"
FIELDS = {
    "name",
    "description",
    "suite",
    "architectures",
    "kernel",
    "packages",
    "overlay",
    "cloud_config",
    "version",
    "parent",
    "persistent_paths",
    "components",
}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
DEFAULT_PERSISTENT_PATHS = ["/etc/ssh/keys", "/var/lib/cos", "/root", "/home", "/var/log"]
CONTAINERFILE = "Containerfile"
# A Containerfile flavor takes these from flavor.yaml; the rest it gets from its parent's
# image and changes in the Containerfile (packages by RUN, files by COPY).
CONTAINERFILE_FIELDS = {"name", "description", "parent", "version", "architectures"}


@dataclass(frozen=True)
class Flavor:
    name: str
    description: str
    suite: str
    architectures: list[str]
    kernel: dict[str, str]
    packages: list[str]
    overlays: list[Path]  # parent's first, so a derivative's files win
    cloud_configs: list[Path]
    version: str
    persistent_paths: list[str]
    components: list[str]
    parent: str | None = None
    files: list[Path] = field(default_factory=list)  # every flavor.yaml that went into this one
    containerfile: Path | None = None  # built FROM the parent's image with buildah

    def packages_for(self, arch: str) -> list[str]:
        return [self.kernel[arch], *self.packages]

    @property
    def folder(self) -> Path:
        return self.files[-1].parent


def flavor_names(images_dir: Path | None = None) -> list[str]:
    root = images_dir or paths.IMAGES_DIR
    return sorted(p.parent.name for p in root.glob("*/flavor.yaml"))


def load_flavor(
    name: str | None = None, images_dir: Path | None = None, _seen: tuple = ()
) -> Flavor:
    root = images_dir or paths.IMAGES_DIR
    name = name or DEFAULT_FLAVOR
    folder = root / name
    path = folder / "flavor.yaml"
    if not path.is_file():
        valid = ", ".join(flavor_names(root)) or "none"
        raise CosError(f"unknown flavor {name!r}; valid flavors: {valid}")
    if name in _seen:
        raise CosError(f"flavor parent cycle: {' -> '.join((*_seen, name))}")
    f = Fields(path, load_yaml_mapping(path), FIELDS)
    declared = f.string("name")
    if declared != name:
        f.fail("name", f"is {declared!r} but the folder is {name!r}; they must match")
    parent_name = f.string("parent", None)
    containerfile = folder / CONTAINERFILE
    if containerfile.is_file():
        if parent_name is None:
            f.fail("parent", f"is required beside {containerfile}: the flavor it builds FROM")
        for key in sorted(set(f.data) - CONTAINERFILE_FIELDS):
            f.fail(
                key,
                f"is not taken beside {containerfile} (it installs packages with RUN and "
                f"adds files with COPY); fields: {', '.join(sorted(CONTAINERFILE_FIELDS))}",
            )
    parent = load_flavor(parent_name, root, (*_seen, name)) if parent_name else None

    def inherited(key, reader, default):
        if parent is not None and key not in f.data:
            return getattr(parent, key)
        return reader(key, default) if default is not ... else reader(key)

    suite = inherited("suite", f.string, ...)
    arches = inherited("architectures", f.string_list, ...)
    for index, arch in enumerate(arches):
        if arch not in ARCHES:
            f.fail(f"architectures[{index}]", f"unknown arch {arch!r}; valid: {', '.join(ARCHES)}")
    kernel = {**(parent.kernel if parent else {}), **f.string_map("kernel", {})}
    for arch in arches:
        if arch not in kernel:
            f.fail("kernel", f"names no kernel package for arch {arch!r}")
    if containerfile.is_file() and parent is not None:
        for index, arch in enumerate(arches):
            if arch not in parent.architectures:
                f.fail(f"architectures[{index}]", f"{arch}: the parent {parent.name} has no {arch}")
    # A Containerfile flavor's folder is its build context: what it holds goes in by COPY.
    own_files = not containerfile.is_file()
    overlay = folder / f.string("overlay", "overlay")
    cloud_config = folder / f.string("cloud_config", "cloud-config.yaml")
    for key, p in (("cloud_config", cloud_config),):
        if key in f.data and not p.is_file():
            f.fail(key, f"file {p} does not exist")
    version = f.string("version")
    if not re.match(r"^[0-9][A-Za-z0-9.+~-]*$", version):
        f.fail("version", f"{version!r} must start with a digit and hold only [A-Za-z0-9.+~-]")
    if not NAME_RE.match(name):
        f.fail("name", f"{name!r} must match {NAME_RE.pattern}")
    return Flavor(
        name=name,
        description=f.string("description"),
        suite=suite,
        architectures=arches,
        kernel=kernel,
        packages=[*(parent.packages if parent else []), *f.string_list("packages", [])],
        overlays=[
            *(parent.overlays if parent else []),
            *([overlay] if own_files and overlay.is_dir() else []),
        ],
        cloud_configs=[
            *(parent.cloud_configs if parent else []),
            *([cloud_config] if own_files and cloud_config.is_file() else []),
        ],
        version=version,
        persistent_paths=inherited("persistent_paths", f.string_list, DEFAULT_PERSISTENT_PATHS),
        components=inherited("components", f.string_list, ["main"]),
        parent=parent_name,
        files=[*(parent.files if parent else []), path],
        containerfile=containerfile if containerfile.is_file() else None,
    )
