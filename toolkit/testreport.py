"""Reports of a test run that `invoke test` and the VM harness's pytest plugin share: the
timing summary (per test its duration, boots, restores and each boot's phases; totals per
arch) and the pass/fail table of repeated runs (flake data). Plain data in, lines out:
the plugin makes the per-test records, suite.py merges the runs' files."""

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

PHASES = ("firmware", "grub", "kernel", "systemd", "ssh")


def _count(events: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for e in events if e["kind"] == kind)


def summarize(tests: list[dict[str, Any]], flavor: str, default_arch: str = "") -> dict[str, Any]:
    """Per test its duration, outcome, boots, restores and states saved, with each boot's
    phases; totals per arch. `tests`: {test, duration, outcome, events[, failure_kind]}."""
    rows = []
    totals: dict[str, dict[str, float]] = {}
    for test in tests:
        events = test.get("events", [])
        arch = events[0]["arch"] if events else default_arch
        row = {
            **test,
            "arch": arch,
            "boots": _count(events, "boot"),
            "restores": _count(events, "restore"),
            "saves": _count(events, "save"),
        }
        rows.append(row)
        total = totals.setdefault(
            arch or "-",
            {"tests": 0, "duration": 0.0, "boots": 0, "restores": 0, "saves": 0,
             "boot_seconds": 0.0, "restore_seconds": 0.0},
        )  # fmt: skip
        total["tests"] += 1
        total["duration"] = round(total["duration"] + test["duration"], 2)
        for kind in ("boots", "restores", "saves"):
            total[kind] += row[kind]
        for event in events:
            if event["kind"] in ("boot", "restore"):
                key = f"{event['kind']}_seconds"
                total[key] = round(total[key] + event.get("ssh", 0.0), 2)
    rows.sort(key=lambda r: -r["duration"])
    return {"flavor": flavor, "tests": rows, "totals": totals}


def merge(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several pytest runs (flavors and arches): tests side by side, totals
    added up per arch."""
    tests = [t for s in summaries for t in s.get("tests", [])]
    totals: dict[str, dict[str, float]] = {}
    for summary in summaries:
        for arch, total in summary.get("totals", {}).items():
            into = totals.setdefault(arch, dict.fromkeys(total, 0))
            for key, value in total.items():
                into[key] = round(into.get(key, 0) + value, 2)
    tests.sort(key=lambda r: -r["duration"])
    return {"flavors": sorted({s.get("flavor", "") for s in summaries}), "tests": tests,
            "totals": totals}  # fmt: skip


def _phases(event: dict[str, Any]) -> str:
    if event["kind"] == "save":
        return f"state saved, made in {event.get('made_in', 0):.1f} s"
    if event["kind"] == "restore":
        return f"restored in {event.get('restore', 0):.1f} s, ssh {event.get('ssh', 0):.1f} s"
    shown = [f"{p} {event[p]:.1f}" for p in PHASES if p in event]
    return "boot: " + ", ".join(shown)


def summary_table(summary: dict[str, Any]) -> list[str]:
    """Lines for the terminal: the tests that used machines, longest first, then totals."""
    lines = [f"{'seconds':>8} {'boots':>5} {'rest.':>5}  {'outcome':8} test"]
    for row in summary["tests"]:
        if not row.get("events"):
            continue
        lines.append(
            f"{row['duration']:8.1f} {row['boots']:5d} {row['restores']:5d}  "
            f"{row['outcome']:8} {row['test']}"
        )
        for event in row["events"]:
            lines.append(f"{'':30}{event['machine']}: {_phases(event)}")
    for arch, total in summary["totals"].items():
        lines.append(
            f"total {arch}: {total['tests']} tests in {total['duration']:.1f} s; "
            f"{total['boots']} boots ({total['boot_seconds']:.1f} s to SSH), "
            f"{total['restores']} restores ({total['restore_seconds']:.1f} s to SSH), "
            f"{total['saves']} states saved"
        )
    return lines


def junit_outcomes(path: Path) -> dict[str, str]:
    """Test id -> passed, failed, error or skipped, from a pytest JUnit XML file."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        test = f"{classname.replace('.', '/')}.py::{name}" if classname else name
        kinds = {child.tag for child in case}
        outcome = "passed"
        for tag in ("skipped", "error", "failure"):
            if tag in kinds:
                outcome = {"failure": "failed"}.get(tag, tag)
        outcomes[test] = outcome
    return outcomes


def flake_table(runs: list[dict[str, str]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per test its passes and failures over repeated runs (and in which runs it failed),
    and the table's lines, failing tests first."""
    table: dict[str, dict[str, Any]] = {}
    for number, outcomes in enumerate(runs, 1):
        for test, outcome in outcomes.items():
            row = table.setdefault(test, {"passed": 0, "failed": 0, "skipped": 0, "failed_in": []})
            if outcome in ("failed", "error"):
                row["failed"] += 1
                row["failed_in"].append(number)
            else:
                row[outcome] += 1
    order = sorted(table, key=lambda t: (-table[t]["failed"], t))
    lines = [f"{'passed':>6} {'failed':>6}  test (runs that failed)"]
    for test in order:
        row = table[test]
        where = f"  (run {', '.join(map(str, row['failed_in']))})" if row["failed_in"] else ""
        skipped = f" [skipped {row['skipped']}]" if row["skipped"] else ""
        lines.append(f"{row['passed']:6d} {row['failed']:6d}  {test}{skipped}{where}")
    return table, lines
