"""Splitting a root file system into the base layer (Debian's packages as shipped) and the
top layer (the rest), on a small tree with a real dpkg database layout."""

import hashlib
import os
from pathlib import Path

from toolkit import oci
from toolkit.layering import split

PROJECT = {"cos-agent"}
DEB_TIME = 1_690_000_000  # when Debian built the package


def write(root: Path, path: str, data: bytes = b"x") -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_bytes(data)


def make_tree(root: Path, stamp: float) -> None:
    """Debian's package `tool` and the project's `cos-agent`, installed."""
    shipped = {"usr/bin/tool": b"tool 1\n", "usr/share/doc/tool/README": b"doc\n",
               "etc/tool.conf": b"shipped\n"}  # fmt: skip
    for path, data in shipped.items():
        write(root, path, data)
    write(root, "etc/tool.conf", b"changed by the flavor\n")  # no longer as shipped
    os.symlink("tool", root / "usr/bin/tool-alias")
    write(root, "usr/lib/python3/dist-packages/tool/__init__.py")
    write(root, "usr/lib/python3/dist-packages/tool/__pycache__/__init__.cpython-313.pyc")
    write(root, "usr/lib/udev/hwdb.bin", b"hwdb")
    write(root, "usr/lib/python3/dist-packages/cos/cli.py", b"agent\n")
    write(root, "usr/lib/python3/dist-packages/cos/__pycache__/cli.cpython-313.pyc")
    write(root, "var/lib/dpkg/status", b"Package: tool\n")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    md5 = {p: hashlib.md5(d).hexdigest() for p, d in shipped.items()}
    md5["usr/lib/python3/dist-packages/tool/__init__.py"] = hashlib.md5(b"x").hexdigest()
    (info / "tool.md5sums").write_text("".join(f"{h}  {p}\n" for p, h in md5.items()))
    owned = ["/usr", "/usr/bin", "/usr/bin/tool", "/usr/bin/tool-alias", "/usr/share",
             "/usr/share/doc", "/usr/share/doc/tool", "/usr/share/doc/tool/README", "/etc",
             "/etc/tool.conf", "/usr/lib", "/usr/lib/python3", "/usr/lib/python3/dist-packages",
             "/usr/lib/python3/dist-packages/tool",
             "/usr/lib/python3/dist-packages/tool/__init__.py"]  # fmt: skip
    (info / "tool.list").write_text("\n".join(owned) + "\n")
    (info / "cos-agent.list").write_text(
        "/usr/lib/python3/dist-packages/cos\n/usr/lib/python3/dist-packages/cos/cli.py\n"
    )
    agent_md5 = hashlib.md5(b"agent\n").hexdigest()
    (info / "cos-agent.md5sums").write_text(
        f"{agent_md5}  usr/lib/python3/dist-packages/cos/cli.py\n"
    )
    # What the build made has the build's time; what the packages shipped, theirs.
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (stamp, stamp), follow_symlinks=False)
    for path in md5:
        os.utime(root / path, (DEB_TIME, DEB_TIME))


def test_debian_files_as_shipped_are_the_base_and_the_rest_is_the_top(tmp_path):
    make_tree(tmp_path, 1_700_000_000)
    layers = split(tmp_path, PROJECT)
    base, top = set(layers.base), set(layers.top)
    pyc = "usr/lib/python3/dist-packages/tool/__pycache__/__init__.cpython-313.pyc"
    assert {"usr/bin/tool", "usr/bin/tool-alias", "usr/share/doc/tool/README",
            "usr/lib/udev/hwdb.bin", pyc} <= base  # fmt: skip
    assert {"etc/tool.conf", "var/lib/dpkg/status", "usr/lib/python3/dist-packages/cos/cli.py",
            "usr/lib/python3/dist-packages/cos/__pycache__/cli.cpython-313.pyc"} <= top  # fmt: skip
    assert not base & top
    assert base | top == {
        os.path.relpath(os.path.join(d, n), tmp_path)
        for d, dirs, files in os.walk(tmp_path)
        for n in dirs + files
    }


def test_the_base_layer_does_not_change_with_the_build_time_or_the_project(tmp_path):
    def base_tar(root: Path, stamp: float, epoch: int, agent: bytes) -> bytes:
        make_tree(root, stamp)
        (root / "usr/lib/python3/dist-packages/cos/cli.py").write_bytes(agent)
        os.utime(root / "usr/lib/python3/dist-packages/cos/cli.py", (stamp, stamp))
        layers = split(root, PROJECT)
        tar = root.parent / f"{root.name}.tar"
        oci.tar_directory(root, tar, epoch, layers.base, layers.pinned)
        return tar.read_bytes()

    first = base_tar(tmp_path / "a", 1_700_000_000, 1_750_000_000, b"agent v1\n")
    second = base_tar(tmp_path / "b", 1_800_000_000, 1_760_000_000, b"agent v2\n")
    assert first == second
