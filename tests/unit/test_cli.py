"""The invoke tasks' one error guard: a CosError is a message and exit code 2."""

import inspect

import pytest
from invoke import Exit

from toolkit.cli import guard
from toolkit.errors import CosError


def test_a_cos_error_becomes_its_message_and_code_2():
    @guard
    def task(c, flavor=None):
        """Build a flavor."""
        raise CosError(f"unknown flavor {flavor!r}")

    with pytest.raises(Exit) as info:
        task(None, flavor="nope")
    assert (info.value.message, info.value.code) == ("error: unknown flavor 'nope'", 2)
    # invoke reads the task's options and help from the wrapped function
    assert list(inspect.signature(task).parameters) == ["c", "flavor"]
    assert (task.__name__, task.__doc__) == ("task", "Build a flavor.")


def test_other_errors_pass_through():
    @guard
    def task(c):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        task(None)
