"""Stage cache: a no-op rebuild does nothing; a failed stage leaves nothing that looks built."""

import os
import subprocess

import pytest

from toolkit.cache import StageCache, inputs_key, mounts_below


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
