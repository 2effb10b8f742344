"""Stage cache: a no-op rebuild does nothing; a failed stage leaves nothing that looks built;
a stage's key follows the code it runs, found through imports."""

import os
import shutil
import subprocess
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

import toolkit
from toolkit import build, paths
from toolkit.arch import get_arch
from toolkit.cache import (
    StageCache,
    StageResult,
    call_with_outputs,
    code_files,
    inputs_key,
    mounts_below,
)
from toolkit.flavors import load_flavor


def writer(calls):
    def build(out):
        calls.append(1)
        for tmp in out.values():
            tmp.write_text("made")

    return build


def test_second_run_is_cached(tmp_path):
    cache, calls, out = StageCache(tmp_path), [], tmp_path / "a.img"
    assert cache.run("a", {"x": 1}, [out], writer(calls)).status == "built"
    assert cache.run("a", {"x": 1}, [out], writer(calls)).status == "cached"
    assert calls == [1] and out.read_text() == "made"


def test_changed_input_rebuilds(tmp_path):
    cache, calls, out = StageCache(tmp_path), [], tmp_path / "a.img"
    source = tmp_path / "input.txt"
    source.write_text("one")
    cache.run("a", {"src": source}, [out], writer(calls))
    source.write_text("two")
    assert cache.run("a", {"src": source}, [out], writer(calls)).status == "built"
    assert len(calls) == 2


def test_missing_output_rebuilds(tmp_path):
    cache, calls, out = StageCache(tmp_path), [], tmp_path / "a.img"
    cache.run("a", {}, [out], writer(calls))
    out.unlink()
    assert cache.run("a", {}, [out], writer(calls)).status == "built"


def test_failure_leaves_no_output_and_no_stamp(tmp_path):
    cache, out = StageCache(tmp_path), tmp_path / "a.img"

    def broken(outputs):
        outputs[out].write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.run("a", {}, [out], broken)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != ".stamps"] == []
    assert not (tmp_path / ".stamps" / "a").exists()


def test_key_follows_tree_content_and_modes(tmp_path):
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "d/f").write_text("x")
    first = inputs_key({"t": tree})
    assert inputs_key({"t": tree}) == first
    (tree / "d/f").chmod(0o755)
    second = inputs_key({"t": tree})
    assert second != first
    (tree / "d/g").symlink_to("f")
    assert inputs_key({"t": tree}) != second


def test_mounts_below_reads_mountinfo_deepest_first(tmp_path):
    root = tmp_path / "a b"
    info = tmp_path / "mountinfo"
    escaped = str(root).replace(" ", "\\040")
    info.write_text(
        f"21 1 0:5 / / rw - ext4 /dev/sda1 rw\n"
        f"30 21 0:6 / {escaped}/proc rw - proc proc ro\n"
        f"31 21 0:7 / {escaped}/dev/pts rw - devpts none rw\n"
        f"32 21 0:8 / {escaped}-other rw - tmpfs tmpfs rw\n"
    )
    assert mounts_below(root, info) == [f"{root}/dev/pts", f"{root}/proc"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_stale_mounts_of_a_killed_build_are_undone_before_rebuilding(tmp_path):
    cache, out = StageCache(tmp_path), tmp_path / "rootfs"
    stale = tmp_path / ".rootfs.partial"
    (stale / "dev/shm").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", stale / "dev/shm"], check=True)
    (stale / "dev/shm/kept").write_text("x")

    def build(outputs):
        outputs[out].mkdir()

    assert cache.run("rootfs", {}, [out], build).status == "built"
    assert mounts_below(tmp_path) == [] and out.is_dir() and not stale.exists()


# ----- a stage's code is found through imports


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_code_files_follow_imports_of_the_same_package_only(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/stage.py": "import os\nimport yaml\nfrom pkg import helper\nfrom . import rel\n",
            "pkg/helper.py": "from pkg.deep import thing\n",
            "pkg/deep.py": "thing = 1\n",
            "pkg/rel.py": "def late():\n    from .lazy import x\n    return x\n",
            "pkg/lazy.py": "x = 2\n",
            "pkg/unrelated.py": "import pkg.stage\n",
            "pkg/sub/__init__.py": "from ..deep import thing\n",
            "pkg/sub/leaf.py": "from pkg import sub\n",
            "other/__init__.py": "",
        },
    )
    names = [p.relative_to(tmp_path).as_posix() for p in code_files("pkg.stage", tmp_path)]
    assert names == [
        "pkg/__init__.py",
        "pkg/deep.py",
        "pkg/helper.py",
        "pkg/lazy.py",
        "pkg/rel.py",
        "pkg/stage.py",
    ]
    names = [p.relative_to(tmp_path).as_posix() for p in code_files("pkg.sub.leaf", tmp_path)]
    assert names == ["pkg/__init__.py", "pkg/deep.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py"]
    with pytest.raises(ValueError, match="no source for module 'pkg.nope'"):
        code_files("pkg.nope", tmp_path)


def test_call_with_outputs_passes_temporaries_for_outputs_only(tmp_path):
    final, other = tmp_path / "disk.raw", tmp_path / "rootfs"
    calls = []
    call_with_outputs(
        partial(lambda *a, **k: calls.append((a, k)), other, final, 3, out=final, src=other),
        {final: tmp_path / ".disk.raw.partial"},
    )
    partial_path = tmp_path / ".disk.raw.partial"
    assert calls == [((other, partial_path, 3), {"out": partial_path, "src": other})]


STAGES = {"rootfs", "system-image", "recovery-image", "disk", "installer-iso", "oci"}


@pytest.fixture
def stage_keys(tmp_path, monkeypatch):
    """(a copy of toolkit/ to edit, a function giving each stage's key as build_image
    computes it with the code in that copy); nothing is built."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        Path(toolkit.__file__).parent,
        checkout / "toolkit",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    monkeypatch.setattr(paths, "REPO_ROOT", checkout)
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("COS_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setattr(build, "MIN_FREE_BYTES", 0)

    def key_only(self, name, inputs, outputs, function, force=False):
        return StageResult(name, inputs_key(inputs), "cached", 0.0)

    monkeypatch.setattr(StageCache, "run", key_only)
    repo = SimpleNamespace(
        repo_dir=tmp_path / "repo", keyring=tmp_path / "keyring.gpg", inputs_hash="0" * 64,
        built=["cos-agent"], reused=[],
    )  # fmt: skip
    flavor, arch = load_flavor("debian-trixie"), get_arch("x86_64")

    def keys() -> dict[str, str]:
        image = build.build_image(flavor, arch, repo, log=lambda _m: None)
        return {stage.name: stage.key for stage in image.stages}

    return checkout / "toolkit", keys


def changed_stages(stage_keys, edit) -> set[str]:
    folder, keys = stage_keys
    before = keys()
    assert set(before) == STAGES
    edit(folder)
    after = keys()
    return {name for name in before if before[name] != after[name]}


def append_comment(module: str):
    def edit(folder: Path) -> None:
        with (folder / module).open("a") as f:
            f.write("\n# edited\n")

    return edit


@pytest.mark.parametrize(
    "module, stages",
    [
        # rootfs, disk and iso import it; every later stage's key holds the rootfs key
        ("arch.py", STAGES),
        ("initramfs.py", STAGES),
        # disk.py (slot image and disk) and iso.py import grub.py
        ("grub.py", {"system-image", "disk", "installer-iso"}),
        # disk.py reads the OCI layout (the slots name their layers); the disk key has oci's,
        # and the ISO's (its system.json names the layers too, through disk.system_info)
        ("oci.py", {"system-image", "oci", "disk", "installer-iso"}),
        ("iso.py", {"installer-iso"}),
        # no stage runs these
        ("registry.py", set()),
        ("publish.py", set()),
        ("bench.py", set()),
    ],
)
def test_editing_a_module_changes_the_keys_of_the_stages_that_run_it(stage_keys, module, stages):
    assert changed_stages(stage_keys, append_comment(module)) == stages


def test_a_new_helper_counts_for_the_stages_whose_code_imports_it(stage_keys):
    folder, keys = stage_keys
    (folder / "isolabel.py").write_text("LABEL = 'COS_LIVE'\n")
    append_comment("iso.py")(folder)
    with (folder / "iso.py").open("a") as f:
        f.write("from toolkit import isolabel  # noqa: E402,F401\n")

    def edit_helper(folder: Path) -> None:
        (folder / "isolabel.py").write_text("LABEL = 'COS_INSTALL'\n")

    assert changed_stages(stage_keys, edit_helper) == {"installer-iso"}
