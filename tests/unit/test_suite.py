"""`invoke test`'s verdict, from real pytest runs over a tiny tree of tests: no image is
built (the build step is injected) and no host is set up."""

import json
from pathlib import Path

import pytest

from toolkit.arch import host_arch
from toolkit.errors import CosError
from toolkit.flavors import flavor_names, load_flavor
from toolkit.suite import NO_TESTS, run_tests

UNIT = """
def test_unit_adds():
    assert 1 + 1 == 2
"""
E2E = """
import pytest

@pytest.mark.vm
def test_scenario_boots():
    assert {outcome}

@pytest.mark.vm
@pytest.mark.slow
def test_scenario_upgrades():
    assert True
"""


class Run:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = tmp_path / "checkout"
        monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))
        self.built: list[tuple[str, str]] = []
        self.prepared: list[tuple[str, ...]] = []
        self.messages: list[str] = []

    def tree(self, unit: str = UNIT, e2e: str = E2E.format(outcome="True")) -> "Run":
        for folder, text in (("unit", unit), ("e2e", e2e)):
            (self.root / "tests" / folder).mkdir(parents=True, exist_ok=True)
            (self.root / "tests" / folder / f"test_{folder}.py").write_text(text)
        return self

    def __call__(
        self,
        keyword: str | None = None,
        unit_only: bool = False,
        slow=False,
        flavor=None,
        arch=None,
        repeat=1,
    ) -> int:
        return run_tests(
            flavor,
            arch,
            unit_only=unit_only,
            keyword=keyword,
            workers=1,
            slow=slow,
            prepare_host=self.prepared.append,
            build=lambda flavor, arch: self.built.append((flavor, arch)),
            root=self.root,
            log=self.messages.append,
            repeat=repeat,
        )


@pytest.fixture
def run(tmp_path, monkeypatch) -> Run:
    return Run(tmp_path, monkeypatch)


def test_both_suites_pass(run):
    assert run.tree()() == 0
    assert run.prepared == [(host_arch(),)]
    assert run.built == [("debian-trixie", host_arch())]
    assert run.messages == []


def test_all_flavors_and_arches_run_each_pair_once(run):
    """`--flavor all --arch all`, as a maintainer runs the whole matrix: every flavor
    under images/ is built and tested for each of its arches; the host is set up once."""
    assert run.tree()(flavor="all", arch="all") == 0
    expected = [(f, a) for f in flavor_names() for a in load_flavor(f).architectures]
    assert run.built == expected
    assert len({f for f, _ in expected}) > 1  # the repository has more than one flavor
    assert run.prepared == [tuple(dict.fromkeys(a for _, a in expected))]


def test_a_failing_vm_suite_fails_the_run(run):
    assert run.tree(e2e=E2E.format(outcome="False"))() == 1


def test_a_failing_unit_suite_stops_before_any_build(run):
    assert run.tree(unit="def test_broken():\n    assert False\n")() == 1
    assert run.built == []


def test_unit_only_builds_nothing(run):
    assert run.tree()(unit_only=True) == 0
    assert run.built == []


def test_a_selection_that_deselects_every_scenario_fails(run):
    # the fast selection of a VM suite that holds only slow scenarios runs nothing
    only_slow = "import pytest\n\n@pytest.mark.vm\n@pytest.mark.slow\ndef test_x():\n    pass\n"
    assert run.tree(e2e=only_slow)() == NO_TESTS
    assert len(run.messages) == 1
    assert run.messages[0].startswith(f"error: the VM suite (debian-trixie, {host_arch()}) ran")
    assert "-m '(vm or image) and not slow'" in run.messages[0]


def test_a_keyword_that_matches_no_unit_test_is_said_and_the_vm_result_still_counts(run):
    assert run.tree(e2e=E2E.format(outcome="False"))(keyword="boots") == 1
    assert run.built == [("debian-trixie", host_arch())]
    assert run.messages == [
        "note: the unit suite ran no test: "
        "`pytest tests/unit -q --timeout=300 -k boots` selected none"
    ]


def test_a_keyword_may_match_one_suite_only(run):
    assert run.tree()(keyword="adds") == 0
    assert [m.split(" ran ")[0] for m in run.messages] == [
        f"note: the VM suite (debian-trixie, {host_arch()})"
    ]


def test_a_keyword_that_matches_nothing_anywhere_fails(run):
    assert run.tree()(keyword="nothing_has_this_name") == NO_TESTS
    assert [m.split(" ran ")[0] for m in run.messages] == [
        "error: the unit suite",
        f"error: the VM suite (debian-trixie, {host_arch()})",
    ]


FLAKY = """
from pathlib import Path

import pytest

@pytest.mark.vm
def test_steady():
    pass

@pytest.mark.vm
def test_flaky():
    count = Path(__file__).with_name("count")
    runs = int(count.read_text()) + 1 if count.exists() else 1
    count.write_text(str(runs))
    assert runs != 2, "fails in the second run only"
"""


def test_repeat_runs_the_vm_suite_n_times_and_tables_passes_and_failures(run, tmp_path):
    assert run.tree(e2e=FLAKY)(repeat=3) == 1  # one failure in three fails the run
    assert run.built == [("debian-trixie", host_arch())]  # built once, not per run
    start = next(i for i, m in enumerate(run.messages) if "over 3 runs" in m)
    assert run.messages[start + 1 :] == [
        "  passed failed  test (runs that failed)",
        "       2      1  tests/e2e/test_e2e.py::test_flaky  (run 2)",
        "       3      0  tests/e2e/test_e2e.py::test_steady",
    ]
    reports = tmp_path / "build" / "reports"
    assert json.loads((reports / "flakes.json").read_text())["runs"] == 3
    for number in (1, 2, 3):  # each run its own JUnit file
        assert (reports / f"run-{number}" / f"e2e-debian-trixie-{host_arch()}.xml").is_file()
    assert (reports / "summary.json").is_file()


def test_repeat_must_be_positive(run):
    with pytest.raises(CosError, match="--repeat must be 1 or more, not 0"):
        run.tree()(repeat=0)
