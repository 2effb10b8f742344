"""The cOS initramfs, assembled on the build host from the image's own files.

Contents: the init script of cos-initramfs, the image's static busybox, and the kernel
modules it lists (with their dependencies, decompressed, in load order). Built in pure
Python as a newc cpio archive, so it costs well under a second for either arch, where
Debian's mkinitramfs takes over ten minutes under qemu-user.
"""

import gzip
import lzma
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import CosError

INIT = "usr/share/cos/initramfs/init"
DHCP_SCRIPT = "usr/share/cos/initramfs/dhcp-script"  # udhcpc's hook, as /bin/cos-dhcp-script
MODULE_LIST = "usr/share/cos/initramfs/modules"
# Loaded by init only when the boot volume does not show up with the first list.
FALLBACK_MODULE_LIST = "usr/share/cos/initramfs/modules-fallback"
BUSYBOX_CANDIDATES = ("usr/bin/busybox", "bin/busybox")
DIRECTORIES = ["bin", "dev", "etc", "proc", "run", "sys", "sysroot", "tmp", "lib", "lib/modules"]


@dataclass(frozen=True)
class Module:
    name: str
    path: str  # relative to /usr/lib/modules/<version>
    depends: tuple[str, ...]


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def read_modules(moddir: Path) -> tuple[dict[str, Module], set[str]]:
    modules = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        name = _module_name(path)
        modules[name] = Module(name, path, tuple(_module_name(d) for d in deps.split()))
    builtin = {_module_name(p) for p in (moddir / "modules.builtin").read_text().split()}
    return modules, builtin


def wanted_modules(list_file: Path) -> list[tuple[str, bool]]:
    """(name, required) pairs; a trailing '?' marks a module that may be absent."""
    wanted = []
    for line in list_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            wanted.append((line.rstrip("?").replace("-", "_"), not line.endswith("?")))
    return wanted


def load_order(
    wanted: list[tuple[str, bool]],
    modules: dict[str, Module],
    builtin: set[str],
    source: Path,
    seen: set[str] | None = None,
) -> list[Module]:
    """Modules to insert, dependencies first; `seen` skips those an earlier list loads."""
    order: list[Module] = []
    seen = set() if seen is None else seen

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        for dep in modules[name].depends:
            visit(dep)
        order.append(modules[name])

    for name, required in wanted:
        if name in builtin:
            continue
        if name not in modules:
            if required:
                raise CosError(
                    f"{source}: module {name!r} is neither built into the kernel nor available"
                )
            continue
        visit(name)
    return order


def decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


class Cpio:
    """Writer of the newc format the kernel unpacks."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.inode = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name_bytes = name.encode() + b"\0"
        fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(name_bytes),
            0,
        ]
        header = b"070701" + b"".join(b"%08x" % f for f in fields)
        self.inode += 1
        for chunk in (header + name_bytes, data):
            self.parts.append(chunk + b"\0" * (-len(chunk) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def build_initramfs(rootfs: Path, kernel_version: str) -> bytes:
    moddir = rootfs / "usr/lib/modules" / kernel_version
    busybox = next((rootfs / p for p in BUSYBOX_CANDIDATES if (rootfs / p).is_file()), None)
    if busybox is None:
        raise CosError(f"{rootfs}: no static busybox (package busybox-static) in the image")
    for needed in (INIT, MODULE_LIST):
        if not (rootfs / needed).is_file():
            raise CosError(f"{rootfs}: /{needed} missing; is cos-initramfs installed?")
    modules, builtin = read_modules(moddir)
    seen: set[str] = set()
    lists = {}
    for source, listed_in in (
        (MODULE_LIST, "etc/cos-modules"),
        (FALLBACK_MODULE_LIST, "etc/cos-modules-fallback"),
    ):
        path = rootfs / source
        wanted = wanted_modules(path) if path.is_file() else []
        lists[listed_in] = load_order(wanted, modules, builtin, path, seen)

    cpio = Cpio()
    for directory in DIRECTORIES:
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("init", (rootfs / INIT).read_bytes(), 0o755)
    if (rootfs / DHCP_SCRIPT).is_file():
        cpio.file("bin/cos-dhcp-script", (rootfs / DHCP_SCRIPT).read_bytes(), 0o755)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    target_dir = f"lib/modules/{kernel_version}"
    cpio.directory(target_dir)
    for listed_in, order in lists.items():
        loaded = []
        for module in order:
            name = f"{target_dir}/{module.name}.ko"
            cpio.file(name, decompress(moddir / module.path))
            loaded.append(f"/{name}\n")
        cpio.file(listed_in, "".join(loaded).encode())
    return cpio.finish()
