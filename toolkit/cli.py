"""What the invoke tasks (tasks.py, vm/tasks.py) share."""

import functools

from invoke import Exit

from toolkit.errors import CosError


def guard(func):
    """A task that shows a CosError as its message (exit code 2), not as a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CosError as exc:
            raise Exit(f"error: {exc}", code=2) from None

    return wrapper
