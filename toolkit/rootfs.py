"""Root filesystem of a flavor for one arch: mmdebstrap, then host-side finishing.

Everything after mmdebstrap runs on the host, never under qemu-user: the image gets
its initramfs from toolkit.initramfs instead of Debian's mkinitramfs (cos-initramfs
provides linux-initramfs-tool), which is what makes aarch64 builds fast.
"""

import os
import re
import shlex
import shutil
from pathlib import Path

from toolkit import native, paths
from toolkit.arch import Arch, get_arch, host_arch
from toolkit.errors import CosError
from toolkit.flavors import Flavor
from toolkit.initramfs import build_initramfs
from toolkit.runner import run, system_env

# Lean images: no manuals, docs or translations (copyright files stay, Debian policy).
DPKG_EXCLUDES = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
]


# Maintainer-script work whose result does not depend on the CPU: under qemu-user it is
# the slow part of a foreign build, so during mmdebstrap the tool is diverted to a no-op
# and its work is done once, natively, afterwards (see run_deferred_tools).
DEFERRED_TOOLS = ["/usr/sbin/update-ca-certificates"]
DEFERRED_SUFFIX = ".cos-deferred"


def defer_tools_hook() -> str:
    """Essential hook: divert each deferred tool and leave a no-op in its place."""
    lines = []
    for tool in DEFERRED_TOOLS:
        divert = f"--divert {tool}{DEFERRED_SUFFIX} --add {tool}"
        lines.append(f'chroot "$1" dpkg-divert --quiet --local --rename {divert}')
        lines.append(f'printf "#!/bin/sh\\nexit 0\\n" > "$1"{tool} && chmod 755 "$1"{tool}')
    return "; ".join(lines)


def restore_tools_hook() -> str:
    """Customize hook: the real tools back in place, as their packages installed them."""
    return "; ".join(
        f'rm -f "$1"{tool} && chroot "$1" dpkg-divert --quiet --local --rename --remove {tool}'
        for tool in DEFERRED_TOOLS
    )


def run_deferred_tools(rootfs: Path, log=print) -> None:
    """What the no-ops skipped, run on the host against the rootfs."""
    updater = rootfs / "usr/sbin/update-ca-certificates"
    if updater.is_file():
        # The image's own (shell) updater with the host's shell, sed and openssl.
        run(
            ["sh", str(updater), "--sysroot", str(rootfs), "--hooksdir", ""],
            what="update-ca-certificates (native)",
            log=log,
        )
        certs = rootfs / "etc/ssl/certs"
        for link in certs.iterdir():
            target = os.readlink(link) if link.is_symlink() else ""
            if target.startswith(f"{rootfs}/"):  # --sysroot writes host paths into links
                link.unlink()
                link.symlink_to("/" + target[len(str(rootfs)) :].lstrip("/"))


def mirror() -> list[str]:
    """COS_MIRROR overrides; otherwise mmdebstrap's own default for the suite."""
    value = os.environ.get("COS_MIRROR", "").strip()
    return [value] if value else []


def mmdebstrap_command(
    flavor: Flavor,
    arch: Arch,
    repo_dir: Path,
    keyring: Path,
    target: Path,
    apt_cache: Path,
    output_format: str = "directory",
    accelerated: bool = True,
    toolbox: Path | None = None,
) -> list[str]:
    """`accelerated=False` is plain mmdebstrap of the same set (bench's baseline): no
    debconf skip, no deferred tools. `toolbox`: host-arch tools for a foreign build."""
    speedups = (
        [
            # debconf's preconfiguration runs Perl over every package under qemu-user (over
            # half a minute for arm64) to ask questions a noninteractive build never shows.
            "--aptopt=#clear DPkg::Pre-Install-Pkgs;",
            f"--essential-hook={defer_tools_hook()}",
            f"--customize-hook={restore_tools_hook()}",
        ]
        if accelerated
        else []
    )
    if accelerated and toolbox is not None:
        speedups += native.hooks(toolbox)
    # copy: (not file:) puts our .debs into the chroot's archive folder, where dpkg sees them.
    cos_source = f"deb [signed-by={keyring}] copy://{repo_dir} cos main"
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        f"--format={output_format}",
        f"--arch={arch.deb}",
        f"--components={','.join(flavor.components)}",
        f"--include={','.join(flavor.packages_for(arch.name) + [arch.grub_efi_package])}",
        *[f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES],
        # The apt archive cache lives outside the checkout: a second build downloads nothing.
        "--skip=essential/unlink",
        f'--setup-hook=mkdir -p {shlex.quote(str(apt_cache))} "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {shlex.quote(str(apt_cache))} /var/cache/apt/archives/",
        f'--setup-hook=echo {shlex.quote(cos_source)} > "$1"/etc/apt/sources.list.d/cos.list',
        '--customize-hook=rm -f "$1"/var/cache/apt/archives/cos-*.deb',
        f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(apt_cache))}",
        '--customize-hook=rm -f "$1"/etc/apt/sources.list.d/cos.list'
        ' "$1"/etc/apt/apt.conf.d/99mmdebstrap',
        *speedups,
        flavor.suite,
        str(target),
        *mirror(),
    ]


def write_if_changed(path: Path, content: str | bytes) -> bool:
    """Write `path` unless it holds `content` already (a derivative's finishing layer then
    carries only what changed); True when it wrote."""
    data = content.encode() if isinstance(content, str) else content
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        return False
    if path.is_symlink():
        path.unlink()
    path.write_bytes(data)
    return True


def os_release(rootfs: Path, flavor: Flavor, arch: Arch, build_id: str) -> None:
    """Name the flavor and version in os-release, keeping Debian's own fields."""
    path = rootfs / "usr/lib/os-release"
    fields = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            fields[key] = "".join(shlex.split(value))
    # a derivative's parent named itself already: keep Debian's name only
    debian = re.sub(r"^cOS \S+ \((.*)\)$", r"\1", fields.get("PRETTY_NAME", "Debian"))
    fields.update(
        {
            "PRETTY_NAME": f"cOS {flavor.version} ({debian})",
            "VARIANT": f"cOS {flavor.name}",
            "VARIANT_ID": flavor.name,
            "IMAGE_ID": f"cos-{flavor.name}",
            "IMAGE_VERSION": flavor.version,
            "BUILD_ID": build_id,
            "COS_ARCH": arch.name,
        }
    )
    escape = str.maketrans({c: "\\" + c for c in '"\\$`'})
    write_if_changed(path, "".join(f'{k}="{v.translate(escape)}"\n' for k, v in fields.items()))


def finish(rootfs: Path, flavor: Flavor, arch: Arch, build_id: str) -> None:
    """Host-side customization: overlay, defaults, identity, no machine-specific state."""
    for overlay in flavor.overlays:
        shutil.copytree(overlay, rootfs, symlinks=True, dirs_exist_ok=True)
    oem = rootfs / "system/oem"
    oem.mkdir(parents=True, exist_ok=True)
    for index, config in enumerate(flavor.cloud_configs):
        shutil.copy(config, oem / f"5{index}-{config.parent.name}.yaml")
    seal(rootfs, flavor, arch, build_id)


def seal(rootfs: Path, flavor: Flavor, arch: Arch, build_id: str) -> None:
    """What every image gets last, a derivative's too: the flavor's name and persistent
    paths, defaults, and no machine identity (a RUN step may have made one)."""
    (rootfs / "etc/cos").mkdir(parents=True, exist_ok=True)
    write_if_changed(rootfs / "etc/cos/persistent-paths", "\n".join(flavor.persistent_paths) + "\n")
    os_release(rootfs, flavor, arch, build_id)
    write_if_changed(rootfs / "etc/hostname", "cos\n")
    write_if_changed(
        rootfs / "etc/fstab", "# cOS: the initramfs mounts everything; see /etc/cos.\n"
    )
    (rootfs / "oem").mkdir(exist_ok=True)
    # Each machine makes its own identity on first boot.
    write_if_changed(rootfs / "etc/machine-id", "")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    mark_updated(rootfs)
    shadow = (rootfs / "etc/shadow").read_text()
    if any(
        line.split(":")[1] not in ("*", "!", "!*", "")
        for line in shadow.splitlines()
        if line.startswith("root:")
    ):
        raise CosError(f"{rootfs}/etc/shadow: root has a password; cOS images must carry none")


def mark_updated(rootfs: Path) -> None:
    """/etc and /var start empty-overlaid on every boot; without these stamps systemd's
    ConditionNeedsUpdate units (ldconfig, catalog, sysusers) rerun at each boot."""
    usr_time = (rootfs / "usr").stat().st_mtime_ns
    for folder in ("etc", "var"):
        stamp = rootfs / folder / ".updated"
        if write_if_changed(stamp, f"# cOS image build\nTIMESTAMP_NSEC={usr_time}\n"):
            os.utime(stamp, ns=(usr_time, usr_time))


def kernel_version(rootfs: Path) -> str:
    versions = sorted(p.name for p in (rootfs / "usr/lib/modules").iterdir() if p.is_dir())
    if len(versions) != 1:
        raise CosError(
            f"{rootfs}: expected exactly one kernel in /usr/lib/modules, found {versions}"
        )
    return versions[0]


def apt_cache_for(flavor: Flavor, arch: Arch) -> Path:
    cache = paths.cache_dir() / "apt" / flavor.suite / arch.deb
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def build_rootfs(
    flavor: Flavor, arch: Arch, repo_dir: Path, keyring: Path, target: Path, log=print
) -> None:
    toolbox = None
    host = get_arch(host_arch())
    if arch != host:
        toolbox = native.build_toolbox(
            flavor.suite,
            host.deb,
            apt_cache_for(flavor, host),
            paths.build_dir() / "toolbox" / f"{flavor.suite}-{host.deb}",
            mirror(),
            log=log,
        )
    command = mmdebstrap_command(
        flavor, arch, repo_dir, keyring, target, apt_cache_for(flavor, arch), toolbox=toolbox
    )
    run(
        command,
        what=f"mmdebstrap {flavor.suite}/{arch.deb}",
        log=log,
        progress=True,
        env=system_env(),
    )
    run_deferred_tools(target, log=log)


def make_rootfs(
    flavor: Flavor,
    arch: Arch,
    repo_dir: Path,
    keyring: Path,
    build_id: str,
    image_key: Path,
    target: Path,
    log=print,
) -> None:
    """The image's root filesystem in `target`: mmdebstrap, the host-side finishing, the
    public key upgrades are checked against, and the initramfs."""
    build_rootfs(flavor, arch, repo_dir, keyring, target, log=log)
    finish(target, flavor, arch, build_id=build_id)
    install_boot_files(target, image_key)


def install_boot_files(rootfs: Path, image_key: Path) -> None:
    """The public key upgrades are checked against, and the initramfs and /boot/vmlinuz of
    the image's one kernel."""
    keys = rootfs / "etc/cos/keys"
    keys.mkdir(parents=True, exist_ok=True)
    write_if_changed(keys / "cos-image.pub", image_key.read_bytes())
    version = kernel_version(rootfs)
    write_if_changed(rootfs / "boot/initrd.img", build_initramfs(rootfs, version))
    vmlinuz = rootfs / "boot/vmlinuz"
    if not vmlinuz.is_symlink() or os.readlink(vmlinuz) != f"vmlinuz-{version}":
        vmlinuz.unlink(missing_ok=True)
        vmlinuz.symlink_to(f"vmlinuz-{version}")
