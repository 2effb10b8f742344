"""The pure-Python .deb writer, checked with the real dpkg-deb and dpkg."""

import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.debfile import DebEntry, build_deb, parse_control, read_control, write_deb

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

CONTROL = {
    "Package": "cos-demo",
    "Version": "1:0.2.0",
    "Architecture": "all",
    "Maintainer": "cOS developers <cos-dev@lists.invalid>",
    "Section": "admin",
    "Priority": "optional",
    "Depends": "python3 (>= 3.11), busybox | busybox-static",
    "Description": "Demo package\nFirst paragraph.\n\nSecond paragraph.",
}
POSTINST = b'#!/bin/sh\nset -e\necho "configured $1" > "$DPKG_ROOT/var/lib/cos-demo-postinst"\n'


def entries() -> list[DebEntry]:
    return [
        DebEntry("/usr/bin/cos-demo", 0o755, data=b"#!/bin/sh\necho demo\n"),
        DebEntry("/etc/cos/demo.conf", 0o644, data=b"answer=42\n"),
        DebEntry("/usr/share/cos-demo/big", 0o644, data=b"x" * 5000),
        DebEntry("/usr/share/cos-demo/empty-dir", 0o755),
        DebEntry("/usr/share/cos-demo/link", 0o777, link="big"),
    ]


def write_demo(path: Path, mtime: int | None = None, control: dict | None = None) -> Path:
    return write_deb(
        path, control or CONTROL, entries(), {"postinst": POSTINST}, ["/etc/cos/demo.conf"], mtime
    )


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def test_same_inputs_give_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = write_demo(tmp_path / "a" / "demo.deb").read_bytes()
    # Entry order given by the caller must not matter either.
    second = build_deb(
        CONTROL, list(reversed(entries())), {"postinst": POSTINST}, ["/etc/cos/demo.conf"]
    )
    assert first == second
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert build_deb(CONTROL, entries()) != build_deb(CONTROL, entries(), mtime=1)
    assert build_deb(CONTROL, entries()) == build_deb(CONTROL, entries(), mtime=1700000000)


def test_dpkg_deb_reads_control(tmp_path):
    deb = write_demo(tmp_path / "demo.deb")
    info = dpkg_deb("--info", str(deb))
    assert "new Debian package, version 2.0." in info
    for name in ("control", "md5sums", "conffiles", "postinst"):
        assert name in info
    fields = parse_control(dpkg_deb("--field", str(deb)))
    assert fields["Package"] == "cos-demo"
    assert fields["Version"] == "1:0.2.0"
    assert fields["Depends"] == "python3 (>= 3.11), busybox | busybox-static"
    # 5000 bytes -> 5 KiB, 2 small files -> 2, symlink 1, directories: / excluded
    # usr, usr/bin, usr/share, usr/share/cos-demo, empty-dir, etc, etc/cos -> 7
    assert fields["Installed-Size"] == str(5 + 2 + 1 + 7)
    assert dpkg_deb("--field", str(deb), "Description") == (
        "Demo package\n First paragraph.\n .\n Second paragraph.\n"
    )
    assert parse_control(read_control(deb)) == fields


def test_dpkg_deb_lists_contents_sorted_root_owned_fixed_time(tmp_path):
    deb = write_demo(tmp_path / "demo.deb", mtime=1704067200)
    lines = dpkg_deb("--contents", str(deb)).splitlines()
    names = [line.split()[5] for line in lines]
    assert names == [
        "./",
        "./etc/",
        "./etc/cos/",
        "./etc/cos/demo.conf",
        "./usr/",
        "./usr/bin/",
        "./usr/bin/cos-demo",
        "./usr/share/",
        "./usr/share/cos-demo/",
        "./usr/share/cos-demo/big",
        "./usr/share/cos-demo/empty-dir/",
        "./usr/share/cos-demo/link",
    ]
    for line in lines:
        owner, _size, day, clock = line.split()[1:5]
        assert owner == "root/root"
        assert (day, clock) == ("2024-01-01", "00:00")
    modes = {line.split()[5]: line.split()[0] for line in lines}
    assert modes["./usr/bin/cos-demo"] == "-rwxr-xr-x"
    assert modes["./etc/cos/demo.conf"] == "-rw-r--r--"
    assert modes["./usr/share/cos-demo/link"] == "lrwxrwxrwx"
    assert "-> big" in lines[-1]


def test_md5sums_match_extracted_files(tmp_path):
    deb = write_demo(tmp_path / "demo.deb")
    root, control = tmp_path / "root", tmp_path / "control"
    dpkg_deb("--extract", str(deb), str(root))
    dpkg_deb("--control", str(deb), str(control))
    md5sums = (control / "md5sums").read_text()
    assert "etc/cos/demo.conf" not in md5sums  # conffiles are tracked by dpkg itself
    assert (control / "conffiles").read_text() == "/etc/cos/demo.conf\n"
    subprocess.run(["md5sum", "--check", "--quiet", str(control / "md5sums")], cwd=root, check=True)
    assert (root / "usr/share/cos-demo/empty-dir").is_dir()


def test_dpkg_installs_and_runs_postinst(tmp_path):
    if shutil.which("dpkg") is None:
        pytest.skip("needs dpkg")
    # No Depends: the empty root has nothing to satisfy them.
    control = {key: value for key, value in CONTROL.items() if key != "Depends"}
    deb = write_demo(tmp_path / "demo.deb", control=control)
    root = tmp_path / "root"
    for sub in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
        (root / sub).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    subprocess.run(
        [
            "dpkg",
            f"--root={root}",
            "--force-not-root",
            "--force-script-chrootless",
            "--log=/dev/null",
            "--install",
            str(deb),
        ],
        check=True,
        capture_output=True,
    )
    assert (root / "usr/bin/cos-demo").read_text() == "#!/bin/sh\necho demo\n"
    assert (root / "etc/cos/demo.conf").read_text() == "answer=42\n"
    assert (root / "var/lib/cos-demo-postinst").read_text() == "configured configure\n"
    status = (root / "var/lib/dpkg/status").read_text()
    assert "Package: cos-demo\nStatus: install ok installed" in status
