"""Host-arch tools for foreign builds: what goes into the rootfs, and the checks after."""

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
    for rel in ["usr/lib/x86_64-linux-gnu/libc.so.6",
                "usr/lib/x86_64-linux-gnu/perl-base/strict.pm",
                "usr/lib/python3.13/lib-dynload/_json.cpython-313-x86_64-linux-gnu.so",
                "usr/lib/python3.13/_sysconfigdata__x86_64-linux-gnu.py",
                "usr/lib/python3.13/os.py",
                "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
                "var/lib/dpkg/info/x86_64-note",
                "usr/bin/perl", "usr/bin/python3.13", "usr/bin/dpkg-deb", "usr/bin/systemd-hwdb"]:
        _touch(box, rel)
    (box / "usr/lib64").mkdir()
    (box / "usr/lib64/ld-linux-x86-64.so.2").symlink_to("../lib/x86_64-linux-gnu/libc.so.6")
    (box / "usr/bin/python3").symlink_to("python3.13")
    return box


def test_native_files_are_only_paths_no_foreign_package_owns(toolbox: Path) -> None:
    assert native._native_files(toolbox, "x86_64-linux-gnu") == [
        "usr/lib/python3.13/_sysconfigdata__x86_64-linux-gnu.py",
        "usr/lib/python3.13/lib-dynload/_json.cpython-313-x86_64-linux-gnu.so",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/perl-base/strict.pm",
        "usr/lib64/ld-linux-x86-64.so.2",
    ]  # never /etc or /var (configuration and dpkg state stay the image's), never os.py


def test_tool_paths_follow_symlinks_to_the_real_executable(toolbox: Path) -> None:
    assert native._tool_paths(toolbox) == {
        "perl": "/usr/bin/perl", "python3": "/usr/bin/python3.13",
        "dpkg-deb": "/usr/bin/dpkg-deb", "systemd-hwdb": "/usr/bin/systemd-hwdb"}


def test_tool_missing_from_toolbox_is_named(toolbox: Path) -> None:
    (toolbox / "usr/bin/systemd-hwdb").unlink()
    with pytest.raises(CosError, match="toolbox has no systemd-hwdb"):
        native._tool_paths(toolbox)


def test_enter_refuses_a_rootfs_that_already_has_host_files(toolbox: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(root, "usr/lib/x86_64-linux-gnu/libc.so.6")
    with pytest.raises(CosError, match="already has host-arch files, e.g. /usr/lib/x86_64-linux-gnu/libc.so.6"):
        native.enter(root, toolbox)


def _dpkg_db(root: Path, package: str, version: str, path: str, content: bytes) -> None:
    import hashlib

    _touch(root, "var/lib/dpkg/status",
           f"Package: other\nStatus: install ok installed\nVersion: 1\n\n"
           f"Package: {package}\nStatus: install ok installed\nArchitecture: arm64\n"
           f"Version: {version}\nDescription: x\n continued: line\n")
    _touch(root, f"var/lib/dpkg/info/{package}:arm64.list", f"/usr\n/usr/bin\n{path}\n")
    digest = hashlib.md5(content).hexdigest()
    _touch(root, f"var/lib/dpkg/info/{package}:arm64.md5sums", f"{digest}  {path.lstrip('/')}\n")
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)


def test_restored_tool_is_checked_against_dpkg(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _dpkg_db(root, "python3.13-minimal", "3.13.5-2", "/usr/bin/python3.13", b"arm64 python")
    native._check_foreign_tool(root, "/usr/bin/python3.13", {"python3.13-minimal": "3.13.5-2"})
    with pytest.raises(CosError, match="python3.13-minimal is 3.13.5-2 but the host-arch toolbox had 3.13.5-3"):
        native._check_foreign_tool(root, "/usr/bin/python3.13", {"python3.13-minimal": "3.13.5-3"})
    (root / "usr/bin/python3.13").write_bytes(b"amd64 python left behind")
    with pytest.raises(CosError, match="not the file python3.13-minimal installed"):
        native._check_foreign_tool(root, "/usr/bin/python3.13", {"python3.13-minimal": "3.13.5-2"})


def test_tool_of_a_package_never_installed_needs_no_check(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _dpkg_db(root, "dpkg", "1.22", "/usr/bin/dpkg-deb", b"x")
    native._check_foreign_tool(root, "/usr/bin/systemd-hwdb", {})


def test_hooks_run_this_module_with_this_interpreter(tmp_path: Path) -> None:
    enter, leave = native.hooks(tmp_path / "box")
    assert "-m toolkit.native enter \"$1\"" in enter and str(tmp_path / "box") in enter
    assert "-m toolkit.native leave \"$1\"" in leave


def test_main_reports_errors_without_a_traceback(toolbox: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    _touch(root, "usr/lib64/ld-linux-x86-64.so.2")
    assert native.main(["enter", str(root), str(toolbox)]) == 1
    assert "already has host-arch files" in capsys.readouterr().err
    assert native.main(["sideways"]) == 2

