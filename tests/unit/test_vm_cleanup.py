"""What dead runs leave is recognised and removed; live runs are left alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vm import cleanup, testrun
from vm.testrun import Owner, owner_alive, process_start_ticks


@pytest.fixture(autouse=True)
def _build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_alive() -> None:
    me = os.getpid()
    assert owner_alive(me, process_start_ticks(me))
    assert owner_alive(me, 0)  # start unknown: the pid alone decides
    assert not owner_alive(me, process_start_ticks(me) + 1)  # a reused pid
    assert not owner_alive(dead_pid(), 0)
    assert not owner_alive(0, 0)


def test_clean_run_dirs(tmp_path: Path) -> None:
    runs = testrun.runs_dir()
    mine = testrun.Run()
    mine.ensure_dir()
    (mine.dir / "cos-test-x").mkdir()
    dead = runs / "999-dead"
    (dead / "cos-test-y").mkdir(parents=True)
    (dead / "owner.json").write_text(json.dumps({"pid": dead_pid(), "pid_start": 1}))
    young_unowned = runs / "1000-new"
    young_unowned.mkdir()  # being created right now: not removed
    removed = cleanup.clean_run_dirs()
    assert removed == [dead]
    assert mine.dir.is_dir() and young_unowned.is_dir() and not dead.exists()


def test_run_cleanup_runs_callbacks_and_removes_empty_dir() -> None:
    r = testrun.Run()
    r.ensure_dir()
    called: list[str] = []
    r.on_exit(1, lambda: called.append("one"))
    r.on_exit(2, lambda: called.append("two"))
    r.forget(2)
    r.on_exit(3, lambda: (_ for _ in ()).throw(RuntimeError("boom")))  # must not stop others
    r.cleanup()
    assert called == ["one"]
    assert not r.dir.exists()


def test_owner_of_current_run() -> None:
    current = testrun.current_run()
    assert current is testrun.current_run()
    owner = current.owner(keep=True)
    assert owner == Owner(current.id, os.getpid(), process_start_ticks(os.getpid()), True)


def test_only_build_folders_are_deleted(tmp_path: Path) -> None:
    inside = testrun.runs_dir() / "r" / "m"
    inside.mkdir(parents=True)
    assert cleanup._safe_to_delete(inside)
    assert not cleanup._safe_to_delete(tmp_path)
    assert not cleanup._safe_to_delete(Path("/"))
