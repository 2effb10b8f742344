"""The run reports `invoke test` prints: the timing summary and merged summaries, and the
passes and failures of repeated runs read from real pytest JUnit files."""

import subprocess
import sys
from pathlib import Path

from toolkit.testreport import flake_table, junit_outcomes, merge, summarize, summary_table

BOOT = {"kind": "boot", "machine": "m1", "arch": "x86_64", "firmware": 4.0, "grub": 4.5,
        "kernel": 7.0, "systemd": 9.0, "ssh": 25.0}  # fmt: skip
RESTORE = {"kind": "restore", "machine": "m2", "arch": "x86_64", "restore": 1.5, "ssh": 3.5}
SAVE = {"kind": "save", "machine": "t", "arch": "x86_64", "made_in": 38.0}


def test_summary_counts_per_test_and_totals_per_arch() -> None:
    tests = [
        {"test": "a", "duration": 30.0, "outcome": "passed", "events": [SAVE, RESTORE]},
        {"test": "b", "duration": 60.0, "outcome": "failed", "events": [BOOT],
         "failure_kind": "scenario"},
        {"test": "c", "duration": 0.5, "outcome": "passed", "events": []},
    ]  # fmt: skip
    summary = summarize(tests, "debian-trixie", "x86_64")
    assert [r["test"] for r in summary["tests"]] == ["b", "a", "c"]  # longest first
    a = summary["tests"][1]
    assert (a["boots"], a["restores"], a["saves"]) == (0, 1, 1)
    assert summary["totals"]["x86_64"] == {
        "tests": 3, "duration": 90.5, "boots": 1, "restores": 1, "saves": 1,
        "boot_seconds": 25.0, "restore_seconds": 3.5,
    }  # fmt: skip
    lines = summary_table(summary)
    assert "m1: boot: firmware 4.0, grub 4.5, kernel 7.0, systemd 9.0, ssh 25.0" in lines[2]
    assert any("t: state saved, made in 38.0 s" in line for line in lines)
    assert not any(line.endswith(" c") for line in lines)  # no machine: not listed
    assert lines[-1].startswith("total x86_64: 3 tests in 90.5 s; 1 boots (25.0 s to SSH)")

    other = summarize([{"test": "d", "duration": 100.0, "outcome": "passed",
                        "events": [dict(BOOT, arch="aarch64")]}], "debian-trixie")  # fmt: skip
    merged = merge([summary, other])
    assert [t["test"] for t in merged["tests"]] == ["d", "b", "a", "c"]
    assert merged["totals"]["x86_64"]["tests"] == 3
    assert merged["totals"]["aarch64"]["boots"] == 1


def junit(tmp_path: Path, name: str, outcomes: dict[str, bool]) -> Path:
    """A real pytest run whose tests pass or fail as told; returns its JUnit file."""
    folder = tmp_path / name
    folder.mkdir()
    body = "".join(f"def test_{t}():\n    assert {ok}\n\n" for t, ok in outcomes.items())
    (folder / "test_flaky.py").write_text(
        "import pytest\n\n"
        + body
        + "@pytest.mark.skip(reason='x')\ndef test_skipped():\n    pass\n"
    )
    xml = folder / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
         str(folder)],
        cwd=folder, capture_output=True, check=False,
    )  # fmt: skip
    return xml


def test_flake_table_from_repeated_runs(tmp_path: Path) -> None:
    runs = [
        junit_outcomes(junit(tmp_path, "r1", {"steady": True, "flaky": True})),
        junit_outcomes(junit(tmp_path, "r2", {"steady": True, "flaky": False})),
        junit_outcomes(junit(tmp_path, "r3", {"steady": True, "flaky": True})),
    ]
    assert runs[1] == {
        "test_flaky.py::test_steady": "passed",
        "test_flaky.py::test_flaky": "failed",
        "test_flaky.py::test_skipped": "skipped",
    }
    table, lines = flake_table(runs)
    assert table["test_flaky.py::test_flaky"] == {
        "passed": 2, "failed": 1, "skipped": 0, "failed_in": [2],
    }  # fmt: skip
    assert table["test_flaky.py::test_steady"]["passed"] == 3
    assert lines[1] == "     2      1  test_flaky.py::test_flaky  (run 2)"  # failures first
    assert "test_flaky.py::test_skipped [skipped 3]" in lines[2]
