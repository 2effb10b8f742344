"""The package tree: `packages/<name>/package.yaml`, validated and put in dependency order.

package.yaml format::

    name: cos-initramfs            # required; equals the folder name; Debian package name rules
    version: 0.1.0                 # required; a Debian version (quote it if YAML sees a number)
    architecture: all              # required: all | any ("any": one .deb each for amd64, arm64)
    description: |                 # required; the first line is the synopsis
      Boot logic of the cOS initramfs
      Longer text...
    maintainer: cOS developers <cos-dev@lists.invalid>   # optional, this default
    section: admin                 # optional, default admin
    priority: optional             # optional, default optional
    depends: [busybox-static, cos-agent]  # optional; Debian relations: "python3 (>= 3.11)", "a | b"
    provides: [linux-initramfs-tool]      # optional
    conflicts: [initramfs-tools]          # optional
    replaces: []                          # optional
    scripts:                       # optional maintainer scripts, files in the package folder
      postinst: postinst           # keys: preinst, postinst, prerm, postrm
    conffiles: []                  # optional: absolute paths, each installed by `files`
    files:                         # optional list of {src, dest, mode}
      - src: init                  # relative to the package folder; a directory is copied
        dest: /usr/share/cos/initramfs/init    # recursively (files sorted, __pycache__ skipped)
        mode: "0755"               # optional, quoted octal; default 0755 if the source is
                                   # executable else 0644; for a directory src it applies to
                                   # the files inside (directories are always 0755)

Dependencies whose name starts with `cos-` are tree packages and must exist in the tree;
other names are Debian packages. Tree packages are returned dependencies first; a cycle is
an error that names it ("cos-a -> cos-b -> cos-a").
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from toolkit import aptrepo, debfile, gpgkey, paths
from toolkit.debfile import DebEntry
from toolkit.errors import CosError
from toolkit.reproducible import source_date_epoch
from toolkit.schema import Fields, load_yaml_mapping

SPEC_FILE = "package.yaml"
TREE_PREFIX = "cos-"
DEB_ARCHES = ("amd64", "arm64")
DEFAULT_MAINTAINER = "cOS developers <cos-dev@lists.invalid>"
SCRIPT_NAMES = ("preinst", "postinst", "prerm", "postrm")
FIELDS = {
    "name",
    "version",
    "architecture",
    "description",
    "maintainer",
    "section",
    "priority",
    "depends",
    "provides",
    "conflicts",
    "replaces",
    "scripts",
    "conffiles",
    "files",
}
SKIPPED_NAMES = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
VERSION_RE = re.compile(r"^(\d+:)?\d[A-Za-z0-9.+~-]*$")
# One relation: name[:archqual] [(op version)] [[arch list]]
RELATION_RE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]+)(:[a-z0-9-]+)?"
    r"(\s*\(\s*(<<|<=|=|>=|>>)\s*(\d+:)?\d[A-Za-z0-9.+~:-]*\s*\))?"
    r"(\s*\[[a-z0-9!\s-]+\])?$"
)


@dataclass(frozen=True)
class FileSpec:
    src: Path  # absolute path inside the package folder
    dest: str  # absolute path in the installed system
    mode: int | None  # None: derived from the source


@dataclass(frozen=True)
class PackageSpec:
    name: str
    version: str
    architecture: str  # "all" or "any"
    description: str
    depends: list[str]
    folder: Path
    maintainer: str = DEFAULT_MAINTAINER
    section: str = "admin"
    priority: str = "optional"
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    scripts: dict[str, Path] = field(default_factory=dict)
    conffiles: list[str] = field(default_factory=list)
    files: list[FileSpec] = field(default_factory=list)

    @property
    def spec_file(self) -> Path:
        return self.folder / SPEC_FILE

    def deb_arches(self) -> list[str]:
        """Debian architectures of the .deb files this package becomes."""
        return ["all"] if self.architecture == "all" else list(DEB_ARCHES)

    def tree_depends(self) -> list[str]:
        """Every `cos-` name in depends (any alternative counts)."""
        return [
            name
            for relation in self.depends
            for name in relation_names(relation)
            if name.startswith(TREE_PREFIX)
        ]


def relation_names(relation: str) -> list[str]:
    """Package names in a relation like "a (>= 1) | b"."""
    return [m.group("name") for alt in relation.split("|") if (m := RELATION_RE.match(alt.strip()))]


def _relations(fields: Fields, key: str, alternatives: bool) -> list[str]:
    values = fields.string_list(key, [])
    for index, value in enumerate(values):
        alts = value.split("|")
        if "," in value:
            fields.fail(f"{key}[{index}]", f"one relation per list item, got {value!r}")
        if len(alts) > 1 and not alternatives:
            fields.fail(f"{key}[{index}]", f"alternatives (|) are not allowed here: {value!r}")
        for alt in alts:
            if not RELATION_RE.match(alt.strip()):
                fields.fail(
                    f"{key}[{index}]",
                    f"not a Debian relation like 'name' or 'name (>= 1.0)': {value!r}",
                )
    return [" | ".join(alt.strip() for alt in value.split("|")) for value in values]


def _inside(folder: Path, rel: Any, fields: Fields, where: str) -> Path:
    """A path given relative to the package folder, that exists and stays inside it."""
    if not isinstance(rel, str) or not rel:
        fields.fail(where, f"must be a non-empty string, got {rel!r}")
    if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        fields.fail(where, f"must be relative to {folder} and stay inside it, got {rel!r}")
    path = folder / rel
    if not path.exists() and not path.is_symlink():
        fields.fail(where, f"{path} does not exist")
    return path


def _dest(value: Any, fields: Fields, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        fields.fail(where, f"must be an absolute path, got {value!r}")
    pure = PurePosixPath(value)
    if ".." in pure.parts or len(pure.parts) < 2:
        fields.fail(where, f"must be a path below / without '..', got {value!r}")
    return str(pure)


def _mode(value: Any, fields: Fields, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
        # Unquoted 0755 is read by YAML as the integer 493: insist on the quoted form.
        fields.fail(where, f'must be a quoted octal string like "0755", got {value!r}')
    return int(value, 8)


def _files(folder: Path, fields: Fields) -> list[FileSpec]:
    items = fields.get("files", list, [])
    specs: list[FileSpec] = []
    for index, item in enumerate(items):
        where = f"files[{index}]"
        if not isinstance(item, dict):
            fields.fail(where, f"must be a mapping with src, dest and mode, got {item!r}")
        unknown = sorted(set(item) - {"src", "dest", "mode"})
        if unknown:
            fields.fail(f"{where}.{unknown[0]}", "unknown field; known fields: dest, mode, src")
        for key in ("src", "dest"):
            if key not in item:
                fields.fail(f"{where}.{key}", "is required")
        src = _inside(folder, item["src"], fields, f"{where}.src")
        specs.append(
            FileSpec(
                src,
                _dest(item["dest"], fields, f"{where}.dest"),
                _mode(item.get("mode"), fields, f"{where}.mode"),
            )
        )
    return specs


def _scripts(folder: Path, fields: Fields) -> dict[str, Path]:
    scripts: dict[str, Path] = {}
    for key, rel in fields.string_map("scripts", {}).items():
        if key not in SCRIPT_NAMES:
            fields.fail(
                f"scripts.{key}", f"unknown maintainer script; valid: {', '.join(SCRIPT_NAMES)}"
            )
        path = _inside(folder, rel, fields, f"scripts.{key}")
        if not path.is_file():
            fields.fail(f"scripts.{key}", f"{path} is not a file")
        if not path.read_bytes().startswith(b"#!"):
            # dpkg executes maintainer scripts directly: without #! they fail at install time.
            fields.fail(f"scripts.{key}", f"{path} must start with a #! line")
        scripts[key] = path
    return scripts


def load_package(folder: Path) -> PackageSpec:
    """Read and validate folder/package.yaml (tree-wide checks are in load_tree)."""
    folder = folder.resolve()
    path = folder / SPEC_FILE
    fields = Fields(path, load_yaml_mapping(path), FIELDS)

    name = fields.string("name")
    if not NAME_RE.match(name):
        fields.fail(
            "name",
            f"{name!r} is not a Debian package name "
            "(lowercase letters, digits, + - ., at least 2 characters)",
        )
    if name != folder.name:
        fields.fail("name", f"{name!r} must equal the folder name {folder.name!r}")

    raw_version = fields.get("version", (str, int), required=True)
    version = str(raw_version)
    if not VERSION_RE.match(version):
        fields.fail("version", f"{version!r} is not a Debian version like 0.1.0 or 1:2.3-1")

    architecture = fields.string("architecture")
    if architecture not in ("all", "any"):
        fields.fail("architecture", f"must be 'all' or 'any', got {architecture!r}")

    description = fields.get("description", str, required=True).strip()
    if not description or not description.splitlines()[0].strip():
        fields.fail("description", "must start with a one-line synopsis")

    single_line = {
        key: fields.string(key, default)
        for key, default in (
            ("maintainer", DEFAULT_MAINTAINER),
            ("section", "admin"),
            ("priority", "optional"),
        )
    }
    for key, value in single_line.items():
        if not value.strip() or "\n" in value:
            fields.fail(key, f"must be one non-empty line, got {value!r}")

    files = _files(folder, fields)
    conffiles = [
        _dest(value, fields, f"conffiles[{i}]")
        for i, value in enumerate(fields.string_list("conffiles", []))
    ]
    return PackageSpec(
        name=name,
        version=version,
        architecture=architecture,
        description=description,
        depends=_relations(fields, "depends", alternatives=True),
        folder=folder,
        provides=_relations(fields, "provides", alternatives=False),
        conflicts=_relations(fields, "conflicts", alternatives=False),
        replaces=_relations(fields, "replaces", alternatives=False),
        scripts=_scripts(folder, fields),
        conffiles=conffiles,
        files=files,
        **single_line,
    )


def _dependency_order(specs: dict[str, PackageSpec]) -> list[PackageSpec]:
    """Depth-first topological sort by name, so the order is stable; cycles are named."""
    done: dict[str, PackageSpec] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in stack:
            cycle = stack[stack.index(name) :] + [name]
            raise CosError(f"dependency cycle among packages: {' -> '.join(cycle)}")
        stack.append(name)
        for dep in sorted(set(specs[name].tree_depends())):
            if dep in specs:
                visit(dep)
        stack.pop()
        done[name] = specs[name]

    for name in sorted(specs):
        visit(name)
    return list(done.values())


def load_tree(packages_dir: Path = paths.PACKAGES_DIR) -> list[PackageSpec]:
    """Every package of the tree, validated, dependencies before their dependents."""
    if not packages_dir.is_dir():
        raise CosError(f"{packages_dir}: package tree not found")
    specs: dict[str, PackageSpec] = {}
    for folder in sorted(packages_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in SKIPPED_NAMES:
            continue
        if not (folder / SPEC_FILE).is_file():
            raise CosError(
                f"{folder}: no {SPEC_FILE} (every folder in {packages_dir} is a package)"
            )
        spec = load_package(folder)
        specs[spec.name] = spec

    provided = {
        name for spec in specs.values() for rel in spec.provides for name in relation_names(rel)
    }
    for spec in specs.values():
        for dep in spec.tree_depends():
            if dep not in specs and dep not in provided:
                raise CosError(
                    f"{SPEC_FILE} of {spec.name} ({spec.spec_file}): "
                    f"depends on unknown package {dep}"
                )
    return _dependency_order(specs)


# --- building: package tree -> .deb files -> signed apt repository --------------------------

BUILD_FORMAT = "1"  # bump to force every package to rebuild


@dataclass
class RepoBuild:
    repo_dir: Path
    keyring: Path  # binary public keyring (.gpg) for apt's signed-by=
    built: list[str]  # package names whose .deb files were (re)built
    reused: list[str]  # package names whose .deb files were up to date
    inputs_hash: str  # changes exactly when the repository content changes
    index_written: bool = False  # False: the repository was already up to date


def _walk(src: Path, dest: str, mode: int | None, spec: PackageSpec) -> list[DebEntry]:
    """Entries for one `files` item: a symlink, a file, or a directory copied recursively."""
    if src.is_symlink():
        return [DebEntry(dest, 0o777, link=os.readlink(src))]
    if src.is_file():
        default = 0o755 if src.stat().st_mode & 0o111 else 0o644
        return [DebEntry(dest, default if mode is None else mode, data=src.read_bytes())]
    if src.is_dir():
        entries = [DebEntry(dest, 0o755)]
        for child in sorted(src.iterdir()):
            if child.name not in SKIPPED_NAMES:
                entries += _walk(child, f"{dest}/{child.name}", mode, spec)
        return entries
    raise CosError(f"{spec.spec_file}: {src} is neither a file, a directory nor a symlink")


def package_entries(spec: PackageSpec) -> list[DebEntry]:
    """What the package installs, checked for overlaps and conffiles it does not ship."""
    entries: dict[str, DebEntry] = {}
    for index, item in enumerate(spec.files):
        for entry in _walk(item.src, item.dest, item.mode, spec):
            other = entries.get(entry.path)
            if other is not None and not (other.is_dir and entry.is_dir):
                raise CosError(
                    f"{spec.spec_file}: field 'files[{index}]': installs "
                    f"{entry.path}, which an earlier files item already installs"
                )
            entries[entry.path] = entry
    for index, path in enumerate(spec.conffiles):
        if path not in entries or entries[path].data is None:
            raise CosError(
                f"{spec.spec_file}: field 'conffiles[{index}]': {path} is not a "
                "regular file installed by 'files'"
            )
    return list(entries.values())


def control_fields(spec: PackageSpec, arch: str) -> dict[str, str]:
    fields = {
        "Package": spec.name,
        "Version": spec.version,
        "Architecture": arch,
        "Maintainer": spec.maintainer,
        "Section": spec.section,
        "Priority": spec.priority,
    }
    for key, values in (
        ("Depends", spec.depends),
        ("Provides", spec.provides),
        ("Conflicts", spec.conflicts),
        ("Replaces", spec.replaces),
    ):
        if values:
            fields[key] = ", ".join(values)
    fields["Description"] = spec.description
    return fields


def deb_filename(spec: PackageSpec, arch: str) -> str:
    version = spec.version.split(":", 1)[-1]  # the epoch is not part of Debian file names
    return f"{spec.name}_{version}_{arch}.deb"


def _inputs_hash(
    spec: PackageSpec, entries: list[DebEntry], scripts: dict[str, bytes], epoch: int
) -> str:
    """Everything that goes into the package's .deb files, including this builder's code."""
    digest = hashlib.sha256()

    def add(*parts: str | bytes) -> None:
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            digest.update(len(data).to_bytes(8, "big") + data)

    add(BUILD_FORMAT, str(epoch), spec.spec_file.read_bytes())
    add(Path(__file__).read_bytes(), Path(debfile.__file__).read_bytes())
    for entry in sorted(entries, key=lambda e: e.path):
        add(
            entry.path,
            oct(entry.mode),
            entry.link or "",
            entry.data if entry.data is not None else b"<dir>",
        )
    for name in sorted(scripts):
        add(name, scripts[name])
    return digest.hexdigest()


def _build_package(spec: PackageSpec, debs_dir: Path, epoch: int) -> tuple[list[Path], bool]:
    """The package's .deb files, rebuilt only when their inputs hash changed."""
    entries = package_entries(spec)
    scripts = {name: path.read_bytes() for name, path in spec.scripts.items()}
    digest = _inputs_hash(spec, entries, scripts, epoch)
    debs, rebuilt = [], False
    for arch in spec.deb_arches():
        deb = debs_dir / deb_filename(spec, arch)
        stamp = deb.with_name(deb.name + ".inputs")
        if not (deb.is_file() and stamp.is_file() and stamp.read_text().strip() == digest):
            stamp.unlink(missing_ok=True)  # deb and stamp never disagree, even if we die here
            try:
                debfile.write_deb(
                    deb, control_fields(spec, arch), entries, scripts, spec.conffiles, epoch
                )
            except CosError as exc:
                raise CosError(f"{spec.spec_file}: {exc}") from None
            stamp.write_text(digest + "\n")
            rebuilt = True
        debs.append(deb)
    return debs, rebuilt


def _remove_stale(debs_dir: Path, keep: list[Path]) -> None:
    """Drop .deb files of removed packages or older versions, so the repo lists only the tree."""
    wanted = {deb.name for deb in keep} | {deb.name + ".inputs" for deb in keep}
    for path in debs_dir.iterdir():
        if path.name not in wanted and (path.suffix in (".deb", ".inputs")):
            path.unlink()


def build_repository(
    packages_dir: Path = paths.PACKAGES_DIR,
    out_dir: Path | None = None,
    keys_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> RepoBuild:
    """Build the changed packages of the tree and publish all of them as a signed repository."""
    specs = load_tree(packages_dir)
    if not specs:
        raise CosError(f"{packages_dir}: no packages (expected <name>/{SPEC_FILE} folders)")
    out_dir = out_dir or paths.build_dir() / "repo"
    debs_dir = out_dir.parent / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    # a commit that touches no package leaves the .debs, and so the rootfs, as they are
    epoch = source_date_epoch(packages_dir)

    built, reused, debs = [], [], []
    for spec in specs:
        files, rebuilt = _build_package(spec, debs_dir, epoch)
        debs += files
        (built if rebuilt else reused).append(spec.name)
        if rebuilt:
            log(f"built {spec.name} {spec.version} ({', '.join(spec.deb_arches())})")
    _remove_stale(debs_dir, debs)
    if built:
        log(f"built {len(built)} packages, {len(reused)} up to date")
    else:
        log(f"nothing to rebuild: {len(reused)} packages up to date")

    key = gpgkey.ensure_key(keys_dir, log)
    published = aptrepo.write_repository(debs, out_dir, key, epoch)
    if published.changed:
        log(f"wrote repository {out_dir} ({len(debs)} .deb files, key {key.fingerprint[-16:]})")
    else:
        log(f"repository {out_dir} up to date")
    return RepoBuild(
        out_dir, published.keyring, built, reused, published.content_hash, published.changed
    )
