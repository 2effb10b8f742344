"""Host-arch programs inside a foreign rootfs while mmdebstrap installs it.

Under qemu-user every process start costs tens of milliseconds and code runs about 17x
slower. A foreign build spends its time in a few programs: perl (debconf,
deb-systemd-helper), python (byte-compiling the standard library), dpkg-deb and tar
(every package's archives), systemd-hwdb, depmod, and the shell and text tools that
maintainer scripts start by the thousand. For these the build extracts the *same
versions* of the host-arch packages from the same suite (the toolbox), and while
mmdebstrap runs:

- the toolbox's libraries sit beside the foreign ones, as Debian multiarch lays them out
  (/usr/lib/<host triplet>, the host's dynamic loader): paths no foreign package owns;
- each executable of those packages is diverted (dpkg-divert) and the native one takes
  its place, so the kernel runs it directly instead of through qemu-user.

What they produce does not depend on the CPU (bytecode, hwdb.bin, modules.dep, unit
symlinks, the debconf database, unpacked files); programs that report the machine stay
foreign. Afterwards every native file goes, the diversions are reverted, and each foreign
executable is checked against dpkg's md5sums and for the toolbox's version.
"""

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from toolkit.arch import get_arch, host_arch
from toolkit.errors import CosError
from toolkit.runner import run, system_env

# What to ask apt for -> (package, its executables) to run natively, as glob patterns.
NATIVE_PACKAGES = {
    "perl-base": ("perl-base", "*"),
    "python3-minimal": ("python3.*-minimal", "*"),
    "dpkg": ("dpkg", "*/dpkg-deb"),  # never dpkg itself: it knows its architecture
    "tar": ("tar", "*"),
    "udev": ("udev", "*/systemd-hwdb"),
    "kmod": ("kmod", "*"),
    "dash": ("dash", "*"),
    "sed": ("sed", "*"),
    "grep": ("grep", "*"),
    "coreutils": ("coreutils", "*"),
}
# What to ask apt for -> packages whose (library) files are laid out only when the image
# has that package too: otherwise a script finds a module the image lacks and behaves
# differently (adduser with libperl's I18N::Langinfo, for one).
OPTIONAL_LIBRARIES = {"perl": "libperl5.*"}
# They answer "which machine is this?": under qemu-user the image's arch, natively the host's.
STAYS_FOREIGN = {"uname", "arch"}
PROBE_ARGS = {"dash": ["-c", ":"]}  # how to start each and exit 0; default --version
DIVERTED_SUFFIX = ".cos-foreign"
MANIFEST = "cos-toolbox.json"
ENTERED = ".cos-native"  # in the rootfs while the native programs are in place
ARCHIVES = "var/cache/apt/archives"


def build_toolbox(
    suite: str, deb_arch: str, apt_cache: Path, target: Path, mirror: list[str], log=print
) -> Path:
    """Extract (no scripts run) the host-arch packages and their dependencies, and note
    each package's version and which of its files are executables to run natively."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=extract",
            f"--arch={deb_arch}",
            f"--include={','.join([*NATIVE_PACKAGES, *OPTIONAL_LIBRARIES])}",
            "--skip=cleanup/apt/cache",
            f'--setup-hook=mkdir -p "$1"/{ARCHIVES}',
            f"--setup-hook=sync-in {shlex.quote(str(apt_cache))} /{ARCHIVES}",
            f"--customize-hook=sync-out /{ARCHIVES} {shlex.quote(str(apt_cache))}",
            suite,
            str(target),
            *mirror,
        ],
        what=f"mmdebstrap toolbox {suite}/{deb_arch}",
        log=log,
        env=system_env(),
    )
    versions, executables, optional = {}, {}, {}
    for deb in sorted((target / ARCHIVES).glob("*.deb")):
        fields = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Package", "Version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        package, version = (line.partition(": ")[2] for line in fields[:2])
        versions[package] = version
        for package_glob, file_glob in NATIVE_PACKAGES.values():
            if fnmatch.fnmatch(package, package_glob):
                executables[package] = [
                    path
                    for path in _elf_executables(deb, target)
                    if fnmatch.fnmatch(path, file_glob)
                ]
        if any(fnmatch.fnmatch(package, g) for g in OPTIONAL_LIBRARIES.values()):
            optional[package] = _members(deb)
    shutil.rmtree(target / ARCHIVES)
    (target / MANIFEST).write_text(
        json.dumps(
            {"versions": versions, "executables": executables, "optional": optional},
            indent=1,
            sort_keys=True,
        )
    )
    return target


def _archive(deb: Path):
    """The package's data archive, member by member, without unpacking it."""
    with (
        subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc,
        tarfile.open(fileobj=proc.stdout, mode="r|") as archive,
    ):
        yield from archive


def _members(deb: Path) -> list[str]:
    """Relative paths of the files and links a package ships."""
    return [os.path.normpath(m.name) for m in _archive(deb) if not m.isdir()]


def _has_package(root: Path, package: str) -> bool:
    """Installed, unpacked or about to be (its .deb downloaded) in the foreign rootfs."""
    info = root / "var/lib/dpkg/info"
    return (
        any(info.glob(f"{package}.list"))
        or any(info.glob(f"{package}:*.list"))
        or any((root / ARCHIVES).glob(f"{package}_*.deb"))
    )


def _elf_executables(deb: Path, toolbox: Path) -> list[str]:
    """Regular ELF executables the package ships in a bin folder (symlinks follow them)."""
    found = []
    for member in _archive(deb):
        path = "/" + os.path.normpath(member.name)
        folder, name = os.path.split(path)
        if (
            member.isreg()
            and member.mode & 0o111
            and name not in STAYS_FOREIGN
            and folder in ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
        ):
            with open(toolbox / path.lstrip("/"), "rb") as file:
                if file.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def _manifest(toolbox: Path) -> dict:
    return json.loads((toolbox / MANIFEST).read_text())


def _native_files(toolbox: Path, host_triplet: str) -> list[str]:
    """Toolbox paths no foreign package can own: the host triplet's folders, the loader."""
    chosen = []
    for folder, dirs, files in os.walk(toolbox):
        rel_folder = os.path.relpath(folder, toolbox)
        if rel_folder.split("/")[0] in ("etc", "var", "dev", "tmp"):
            dirs.clear()
            continue
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = os.path.normpath(os.path.join(rel_folder, name))
            if (
                host_triplet in rel
                or rel.startswith(("lib64/", "usr/lib64/"))
                or name.startswith("ld-linux")
            ):
                chosen.append(rel)
    return sorted(chosen)


def _chroot(root: Path, *command: str) -> None:
    result = subprocess.run(
        ["chroot", str(root), *command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise CosError(
            f"chroot {root} {' '.join(command)} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )


def _divert(root: Path, path: str, action: str) -> None:
    """The host's dpkg-divert on the rootfs's database: same format, no emulation."""
    run(
        [
            "dpkg-divert",
            f"--root={root}",
            "--quiet",
            "--local",
            "--rename",
            *(["--divert", path + DIVERTED_SUFFIX] if action == "--add" else []),
            action,
            path,
        ],
        what=f"dpkg-divert {action} {path}",
    )


def enter(root: Path, toolbox: Path, stage: str) -> None:
    """mmdebstrap extract hook (before the essential packages are installed) or, where
    usrmerge converts the essential set and inspects its binaries with the foreign ldd,
    the essential hook after it."""
    if (root / ENTERED).exists():
        return
    if stage == "extract" and any((root / ARCHIVES).glob("usrmerge_*.deb")):
        return
    manifest = _manifest(toolbox)
    absent = {
        rel
        for package, members in manifest["optional"].items()
        if not _has_package(root, package)
        for rel in members
    }
    files = [
        rel for rel in _native_files(toolbox, get_arch(host_arch()).triplet) if rel not in absent
    ]
    clashes = [f for f in files if os.path.lexists(root / f)]
    if clashes:
        raise CosError(
            f"{root}: already has host-arch files, e.g. /{clashes[0]}; not a foreign rootfs?"
        )
    (root / ENTERED).write_text(stage + "\n")
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(toolbox / rel, root / rel, follow_symlinks=False)
    if (toolbox / "usr/lib64").is_dir() and not os.path.lexists(root / "lib64"):
        (root / "lib64").symlink_to("usr/lib64")  # where the host's ELF interpreter is looked up
    for paths in manifest["executables"].values():
        for path in paths:
            _divert(root, path, "--add")
            shutil.copy2(toolbox / path.lstrip("/"), root / path.lstrip("/"))
        if paths:  # the native copies must start in there
            probe = os.path.basename(paths[0])
            _chroot(root, paths[0], *PROBE_ARGS.get(probe, ["--version"]))


def leave(root: Path, toolbox: Path) -> None:
    """mmdebstrap customize hook: the foreign executables back, every native file gone."""
    manifest = _manifest(toolbox)
    executables = [path for paths in manifest["executables"].values() for path in paths]
    for path in executables:
        (root / path.lstrip("/")).unlink()
        _divert(root, path, "--remove")
    owners = _owners(root, set(executables))
    installed = _installed_versions(root)
    for path in executables:
        _check_foreign_tool(root, path, owners.get(path), manifest["versions"], installed)
    files = _native_files(toolbox, get_arch(host_arch()).triplet)
    for rel in files:
        (root / rel).unlink(missing_ok=True)  # an optional library may have stayed out
    for folder in sorted({str(Path(rel).parent) for rel in files}, key=len, reverse=True):
        while (
            folder not in (".", "usr", "usr/lib")
            and (root / folder).is_dir()
            and not any((root / folder).iterdir())
        ):
            (root / folder).rmdir()
            folder = str(Path(folder).parent)
    if (root / "lib64").is_symlink() and not (root / "lib64").exists():
        (root / "lib64").unlink()
    (root / ENTERED).unlink()


def _check_foreign_tool(
    root: Path,
    path: str,
    info_name: str | None,
    versions: dict[str, str],
    installed: dict[str, str],
) -> None:
    """The restored executable is the one dpkg installed, and its native stand-in came from
    the same source version (binNMU suffixes may differ between architectures)."""
    if info_name is None:
        return  # its package was never installed: nothing was done in its name
    owner = info_name.split(":")[0]
    status = installed.get(owner)
    if _source_version(versions.get(owner)) != _source_version(status):
        raise CosError(
            f"{root}: {owner} is {status} but the host-arch toolbox had "
            f"{versions.get(owner)}; the mirror changed during the build, build again"
        )
    sums = root / f"var/lib/dpkg/info/{info_name}.md5sums"
    want = next(
        (
            line.split()[0]
            for line in sums.read_text().splitlines()
            if line.endswith(" " + path.lstrip("/"))
        ),
        None,
    )
    got = hashlib.md5((root / path.lstrip("/")).read_bytes()).hexdigest()
    if want != got:
        raise CosError(f"{root}{path}: not the file {owner} installed after restoring it")


def _source_version(version: str | None) -> str | None:
    return re.sub(r"\+b\d+$", "", version) if version else None


def _owners(root: Path, paths: set[str]) -> dict[str, str]:
    """path -> the dpkg info name (arch-qualified if Multi-Arch: same) that ships it."""
    owners = {}
    for listing in (root / "var/lib/dpkg/info").glob("*.list"):
        for line in listing.read_text().splitlines():
            if line in paths:
                owners[line] = listing.stem
    return owners


def _installed_versions(root: Path) -> dict[str, str]:
    """Package -> version of what dpkg's status database calls installed."""
    versions = {}
    for stanza in (root / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in stanza.splitlines()
            if ": " in line and not line[0].isspace()
        )
        if fields.get("Status", "").endswith(" installed"):
            versions[fields["Package"]] = fields.get("Version")
    return versions


def hooks(toolbox: Path) -> list[str]:
    """mmdebstrap options: enter at the extract hook or the essential hook, leave at the
    customize hook."""
    base = f"{shlex.quote(sys.executable)} -m toolkit.native"
    box = shlex.quote(str(toolbox))
    return [
        f'--extract-hook={base} enter "$1" {box} extract',
        f'--essential-hook={base} enter "$1" {box} essential',
        f'--customize-hook={base} leave "$1" {box}',
    ]


def main(argv: list[str]) -> int:
    usage = (
        "usage: python -m toolkit.native enter ROOTFS TOOLBOX extract|essential"
        " | leave ROOTFS TOOLBOX"
    )
    if not (
        (argv[:1] == ["enter"] and len(argv) == 4 and argv[3] in ("extract", "essential"))
        or (argv[:1] == ["leave"] and len(argv) == 3)
    ):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "enter":
            enter(Path(argv[1]), Path(argv[2]), argv[3])
        else:
            leave(Path(argv[1]), Path(argv[2]))
    except (CosError, subprocess.CalledProcessError, OSError) as error:
        print(f"cos native tools: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
