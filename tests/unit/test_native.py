"""Host-arch tools for foreign builds: what goes into the rootfs, and the checks after."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit import native
from toolkit.errors import CosError


def _touch(root: Path, rel: str, text: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def toolbox(tmp_path: Path) -> Path:
    box = tmp_path / "toolbox"
    for rel in [
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/perl-base/strict.pm",
        "usr/lib/python3.13/lib-dynload/_json.cpython-313-x86_64-linux-gnu.so",
        "usr/lib/python3.13/_sysconfigdata__x86_64-linux-gnu.py",
        "usr/lib/python3.13/os.py",
        "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
        "var/lib/dpkg/info/x86_64-note",
        "usr/bin/perl",
        "usr/bin/python3.13",
        "usr/bin/dpkg-deb",
        "usr/bin/systemd-hwdb",
    ]:
        _touch(box, rel)
    (box / "usr/lib64").mkdir()
    (box / "usr/lib64/ld-linux-x86-64.so.2").symlink_to("../lib/x86_64-linux-gnu/libc.so.6")
    (box / "usr/bin/python3").symlink_to("python3.13")
    (box / native.MANIFEST).write_text(
        json.dumps({"versions": {}, "executables": {}, "optional": {}})
    )
    return box


def test_native_files_are_only_paths_no_foreign_package_owns(toolbox: Path) -> None:
    assert native._native_files(toolbox, "x86_64-linux-gnu") == [
        "usr/lib/python3.13/_sysconfigdata__x86_64-linux-gnu.py",
        "usr/lib/python3.13/lib-dynload/_json.cpython-313-x86_64-linux-gnu.so",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/perl-base/strict.pm",
        "usr/lib64/ld-linux-x86-64.so.2",
    ]  # never /etc or /var (configuration and dpkg state stay the image's), never os.py


def test_executables_are_the_packages_elf_programs_except_machine_reporters(tmp_path: Path) -> None:
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: tools\nVersion: 1\nArchitecture: all\n"
        "Maintainer: cOS <cos@lists.invalid>\nDescription: t\n"
    )
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/lib").mkdir(parents=True)
    for name in ("true", "uname"):
        shutil.copy("/usr/bin/true", tree / "usr/bin" / name)
    shutil.copy("/usr/bin/true", tree / "usr/lib/helper")  # not in a bin folder
    (tree / "usr/bin/script").write_text("#!/bin/sh\n")
    (tree / "usr/bin/script").chmod(0o755)
    (tree / "usr/bin/alias").symlink_to("true")
    deb = tmp_path / "tools.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    toolbox = tmp_path / "box"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(toolbox)], check=True)
    assert native._elf_executables(deb, toolbox) == ["/usr/bin/true"]


def test_binnmu_suffix_is_not_a_different_source() -> None:
    assert native._source_version("6.0.2-1+b2") == native._source_version("6.0.2-1") == "6.0.2-1"
    assert native._source_version("6.0.2-2") != "6.0.2-1"


def test_enter_refuses_a_rootfs_that_already_has_host_files(toolbox: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(root, "usr/lib/x86_64-linux-gnu/libc.so.6")
    with pytest.raises(
        CosError, match="already has host-arch files, e.g. /usr/lib/x86_64-linux-gnu/libc.so.6"
    ):
        native.enter(root, toolbox, "extract")
    assert not (root / native.ENTERED).exists()


def _dpkg_db(root: Path, package: str, version: str, path: str, content: bytes) -> None:
    import hashlib

    _touch(
        root,
        "var/lib/dpkg/status",
        f"Package: other\nStatus: install ok installed\nVersion: 1\n\n"
        f"Package: {package}\nStatus: install ok installed\nArchitecture: arm64\n"
        f"Version: {version}\nDescription: x\n continued: line\n",
    )
    _touch(root, f"var/lib/dpkg/info/{package}:arm64.list", f"/usr\n/usr/bin\n{path}\n")
    digest = hashlib.md5(content).hexdigest()
    _touch(root, f"var/lib/dpkg/info/{package}:arm64.md5sums", f"{digest}  {path.lstrip('/')}\n")
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)


def test_restored_tool_is_checked_against_dpkg(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _dpkg_db(root, "python3.13-minimal", "3.13.5-2", "/usr/bin/python3.13", b"arm64 python")
    owner = native._owners(root, {"/usr/bin/python3.13"})["/usr/bin/python3.13"]
    installed = native._installed_versions(root)
    assert installed == {"other": "1", "python3.13-minimal": "3.13.5-2"}
    assert owner == "python3.13-minimal:arm64"
    native._check_foreign_tool(
        root, "/usr/bin/python3.13", owner, {"python3.13-minimal": "3.13.5-2+b1"}, installed
    )
    with pytest.raises(
        CosError, match="python3.13-minimal is 3.13.5-2 but the host-arch toolbox had 3.13.5-3"
    ):
        native._check_foreign_tool(
            root, "/usr/bin/python3.13", owner, {"python3.13-minimal": "3.13.5-3"}, installed
        )
    (root / "usr/bin/python3.13").write_bytes(b"amd64 python left behind")
    with pytest.raises(CosError, match="not the file python3.13-minimal installed"):
        native._check_foreign_tool(
            root, "/usr/bin/python3.13", owner, {"python3.13-minimal": "3.13.5-2"}, installed
        )


def test_tool_of_a_package_never_installed_needs_no_check(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _dpkg_db(root, "dpkg", "1.22", "/usr/bin/dpkg-deb", b"x")
    assert native._owners(root, {"/usr/bin/systemd-hwdb"}) == {}
    native._check_foreign_tool(root, "/usr/bin/systemd-hwdb", None, {}, {})


def test_hooks_run_this_module_with_this_interpreter(tmp_path: Path) -> None:
    extract, essential, customize = native.hooks(tmp_path / "box")
    assert extract.startswith("--extract-hook=") and extract.endswith(
        f'enter "$1" {tmp_path / "box"} extract'
    )
    assert essential.startswith("--essential-hook=") and essential.endswith("essential")
    assert customize.startswith("--customize-hook=") and '-m toolkit.native leave "$1"' in customize


def test_enter_waits_for_usrmerge_and_happens_once(toolbox: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(root, "var/cache/apt/archives/usrmerge_37_all.deb")
    native.enter(root, toolbox, "extract")  # usrmerge checks the essential set with ldd
    assert not (root / "usr/lib/x86_64-linux-gnu").exists()
    (root / native.ENTERED).write_text("essential\n")
    native.enter(root, toolbox, "essential")  # already entered: nothing happens twice
    assert not (root / "usr/lib/x86_64-linux-gnu").exists()


def test_main_reports_errors_without_a_traceback(toolbox: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    _touch(root, "usr/lib64/ld-linux-x86-64.so.2")
    assert native.main(["enter", str(root), str(toolbox), "extract"]) == 1
    assert "already has host-arch files" in capsys.readouterr().err
    assert native.main(["sideways"]) == 2
    assert native.main(["enter", str(root), str(toolbox)]) == 2  # which hook is missing


@pytest.mark.parametrize("image_has_libperl", [False, True])
def test_optional_libraries_only_where_the_image_has_them(
    toolbox: Path, tmp_path: Path, image_has_libperl: bool
) -> None:
    langinfo = "usr/lib/x86_64-linux-gnu/perl/5.40/I18N/Langinfo.pm"
    _touch(toolbox, langinfo)
    (toolbox / native.MANIFEST).write_text(
        json.dumps({"versions": {}, "executables": {}, "optional": {"libperl5.40": [langinfo]}})
    )
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    if image_has_libperl:
        _touch(root, "var/lib/dpkg/info/libperl5.40:arm64.list")
    native.enter(root, toolbox, "extract")
    assert (root / "usr/lib/x86_64-linux-gnu/libc.so.6").exists()
    # without libperl in the image, adduser must not find I18N::Langinfo natively either
    assert (root / langinfo).exists() == image_has_libperl
    assert (root / "lib64").is_symlink()
    native.leave(root, toolbox)
    assert not (root / "usr/lib/x86_64-linux-gnu").exists()
    assert not (root / "lib64").exists() and not (root / "usr/lib64").exists()
    assert not (root / native.ENTERED).exists()
