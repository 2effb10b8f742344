"""The one SOURCE_DATE_EPOCH: the variable, else git's last commit of the sources, else a
fixed date; a bad value names the variable and the value."""

import subprocess

import pytest

from toolkit import paths
from toolkit.errors import CosError
from toolkit.reproducible import DEFAULT_EPOCH, source_date_epoch


def git(*args: str, cwd) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_variable_wins(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", " 1700000000 ")
    assert source_date_epoch() == 1700000000
    assert source_date_epoch(paths.PACKAGES_DIR) == 1700000000


@pytest.mark.parametrize("value", ["yesterday", "-5", "1.5"])
def test_a_bad_value_names_the_variable_and_the_value(monkeypatch, value):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(CosError, match=rf"SOURCE_DATE_EPOCH must be .*got '{value}'"):
        source_date_epoch()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout with two commits an hour apart: a/ first, then b/."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    git("init", "-q", cwd=tmp_path)
    for folder, when in (("a", 1_700_000_000), ("b", 1_700_003_600)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "f").write_text(folder)
        git("add", folder, cwd=tmp_path)
        stamp = f"@{when} +0000"
        env = ["-c", "user.name=t", "-c", "user.email=t@localhost"]
        subprocess.run(
            ["git", *env, "commit", "-q", "-m", folder],
            cwd=tmp_path,
            check=True,
            env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp, "PATH": "/usr/bin:/bin"},
        )
    return tmp_path


def test_without_the_variable_the_last_commit_of_the_sources(checkout):
    assert source_date_epoch() == 1_700_003_600
    assert source_date_epoch(checkout / "a") == 1_700_000_000
    assert source_date_epoch(checkout / "a", checkout / "b") == 1_700_003_600


def test_without_git_history_a_fixed_date(checkout, tmp_path_factory, monkeypatch):
    (checkout / "new").mkdir()
    assert source_date_epoch(checkout / "new") == DEFAULT_EPOCH  # never committed
    assert source_date_epoch(tmp_path_factory.mktemp("elsewhere")) == DEFAULT_EPOCH
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path_factory.mktemp("not-a-checkout"))
    assert source_date_epoch() == DEFAULT_EPOCH
