"""Host-arch interpreters inside a foreign rootfs while mmdebstrap installs it.

Under qemu-user every process start costs tens of milliseconds and code runs about 17x
slower. Maintainer scripts spend most of a foreign build in a few programs: perl (debconf,
deb-systemd-helper), python (byte-compiling the standard library), dpkg-deb (decompressing
every package) and systemd-hwdb. For these the build extracts the *same versions* of the
host-arch packages from the same suite (the toolbox), and while mmdebstrap runs:

- the toolbox's libraries sit beside the foreign ones, as Debian multiarch lays them out
  (/usr/lib/<host triplet>, the host's dynamic loader): paths no foreign package owns;
- each tool is diverted with dpkg-divert and the native executable takes its place, so
  the kernel runs it directly instead of through qemu-user.

Their output does not depend on the CPU (bytecode, hwdb.bin, unit symlinks, the debconf
database, unpacked files). Afterwards every native file goes, the diversions are reverted,
and each foreign tool is checked against dpkg's md5sums and for the toolbox's version.
"""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from toolkit.errors import CosError
from toolkit.runner import run

# Tool -> argument that makes it start and exit: proves the native copy runs in the chroot.
TOOLS = {"perl": "-e1", "python3": "--version", "dpkg-deb": "--version", "systemd-hwdb": "--version"}
TOOL_PACKAGES = ["perl-base", "python3-minimal", "dpkg", "udev"]
DIVERTED_SUFFIX = ".cos-foreign"
VERSIONS_FILE = "cos-toolbox-versions.json"


def triplet(deb_arch: str) -> str:
    return {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[deb_arch]


def host_deb_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def build_toolbox(suite: str, deb_arch: str, apt_cache: Path, target: Path, mirror: list[str],
                  log=print) -> Path:
    """Extract (no scripts run) the tools' host-arch packages and their dependencies."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    archives = "/var/cache/apt/archives"
    run(["mmdebstrap", "--mode=root", "--variant=extract", f"--arch={deb_arch}",
         f"--include={','.join(TOOL_PACKAGES)}", "--skip=cleanup/apt/cache",
         f"--setup-hook=mkdir -p \"$1\"{archives}",
         f"--setup-hook=sync-in {shlex.quote(str(apt_cache))} {archives}",
         f"--customize-hook=sync-out {archives} {shlex.quote(str(apt_cache))}",
         suite, str(target), *mirror],
        what=f"mmdebstrap toolbox {suite}/{deb_arch}", log=log)
    versions = {}
    for deb in (target / archives.lstrip("/")).glob("*.deb"):
        name, version = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version"],
                                       capture_output=True, text=True, check=True).stdout.split("\n")[:2]
        versions[name.partition(": ")[2]] = version.partition(": ")[2]
    shutil.rmtree(target / archives.lstrip("/"))
    (target / VERSIONS_FILE).write_text(json.dumps(versions, indent=1, sort_keys=True))
    return target


def _tool_paths(toolbox: Path) -> dict[str, str]:
    """Tool name -> the path its package ships the real executable at (symlinks followed)."""
    paths = {}
    for name in TOOLS:
        for folder in ("usr/bin", "bin", "usr/sbin", "sbin"):
            candidate = toolbox / folder / name
            if candidate.is_file():
                real = candidate.resolve()
                paths[name] = "/" + str(real.relative_to(toolbox.resolve()))
                break
        else:
            raise CosError(f"{toolbox}: toolbox has no {name}")
    return paths


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
            if host_triplet in rel or rel.startswith(("lib64/", "usr/lib64/")) \
                    or name.startswith("ld-linux"):
                chosen.append(rel)
    return sorted(chosen)


def _chroot(root: Path, *command: str) -> None:
    result = subprocess.run(["chroot", str(root), *command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CosError(f"chroot {root} {' '.join(command)} failed (exit {result.returncode}): "
                       f"{(result.stderr or result.stdout).strip()[-500:]}")


def enter(root: Path, toolbox: Path) -> None:
    """mmdebstrap extract hook: before the essential packages are installed."""
    host_triplet = triplet(host_deb_arch())
    files = _native_files(toolbox, host_triplet)
    clashes = [f for f in files if os.path.lexists(root / f)]
    if clashes:
        raise CosError(f"{root}: already has host-arch files, e.g. /{clashes[0]}; not a foreign rootfs?")
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(toolbox / rel, root / rel, follow_symlinks=False)
    if (toolbox / "usr/lib64").is_dir() and not os.path.lexists(root / "lib64"):
        (root / "lib64").symlink_to("usr/lib64")  # where the host's ELF interpreter is looked up
    for name, path in _tool_paths(toolbox).items():
        _chroot(root, "dpkg-divert", "--quiet", "--local", "--rename",
                "--divert", path + DIVERTED_SUFFIX, "--add", path)
        shutil.copy2(toolbox / path.lstrip("/"), root / path.lstrip("/"))
        _chroot(root, path, TOOLS[name])  # the native copy must start here


def leave(root: Path, toolbox: Path) -> None:
    """mmdebstrap customize hook: the foreign tools back, every native file gone."""
    versions = json.loads((toolbox / VERSIONS_FILE).read_text())
    for path in _tool_paths(toolbox).values():
        (root / path.lstrip("/")).unlink()
        _chroot(root, "dpkg-divert", "--quiet", "--local", "--rename", "--remove", path)
        _check_foreign_tool(root, path, versions)
    files = _native_files(toolbox, triplet(host_deb_arch()))
    for rel in files:
        (root / rel).unlink()
    for folder in sorted({str(Path(rel).parent) for rel in files}, key=len, reverse=True):
        while folder not in (".", "usr", "usr/lib") and (root / folder).is_dir() \
                and not any((root / folder).iterdir()):
            (root / folder).rmdir()
            folder = str(Path(folder).parent)
    if (root / "lib64").is_symlink() and not (root / "lib64").exists():
        (root / "lib64").unlink()


def _check_foreign_tool(root: Path, path: str, versions: dict[str, str]) -> None:
    """The restored tool is the one dpkg installed, and the native stand-in was its twin."""
    info_name = _owner(root, path)
    if info_name is None:
        return  # the package was never installed: nothing was done in its name
    owner = info_name.split(":")[0]
    status = _installed_version(root, owner)
    if versions.get(owner) != status:
        raise CosError(f"{root}: {owner} is {status} but the host-arch toolbox had "
                       f"{versions.get(owner)}; the mirror changed during the build, build again")
    sums = root / f"var/lib/dpkg/info/{info_name}.md5sums"
    want = next((line.split()[0] for line in sums.read_text().splitlines()
                 if line.endswith(" " + path.lstrip("/"))), None)
    got = hashlib.md5((root / path.lstrip("/")).read_bytes()).hexdigest()
    if want != got:
        raise CosError(f"{root}{path}: not the file {owner} installed after restoring it")


def _owner(root: Path, path: str) -> str | None:
    """The dpkg info name (package, arch-qualified if Multi-Arch: same) that ships `path`."""
    for listing in (root / "var/lib/dpkg/info").glob("*.list"):
        if path in listing.read_text().splitlines():
            return listing.stem
    return None


def _installed_version(root: Path, package: str) -> str | None:
    for stanza in (root / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
            return fields.get("Version")
    return None


def hooks(toolbox: Path) -> tuple[str, str]:
    """(extract hook, customize hook) for mmdebstrap."""
    base = f"{shlex.quote(sys.executable)} -m toolkit.native"
    return (f'{base} enter "$1" {shlex.quote(str(toolbox))}',
            f'{base} leave "$1" {shlex.quote(str(toolbox))}')


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("enter", "leave"):
        print("usage: python -m toolkit.native enter|leave ROOTFS TOOLBOX", file=sys.stderr)
        return 2
    action, root, toolbox = argv
    try:
        (enter if action == "enter" else leave)(Path(root), Path(toolbox))
    except (CosError, subprocess.CalledProcessError, OSError) as error:
        print(f"cos native tools: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
