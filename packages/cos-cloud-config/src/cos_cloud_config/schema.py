"""Checking a config's shape before anything runs: every mistake named by its path
(`users[0].groups: expected a list or a string`)."""

from collections.abc import Callable

# A check takes (value, path) and returns the problems it finds.
Check = Callable[[object, str], list[str]]


def _type(kinds: tuple, name: str) -> Check:
    def check(value, path):
        # bool is an int to Python, never to a config author.
        if isinstance(value, bool) and bool not in kinds:
            return [f"{path}: expected {name}, got {value!r}"]
        return [] if isinstance(value, kinds) else [f"{path}: expected {name}, got {value!r}"]

    return check


STR = _type((str,), "a string")
BOOL = _type((bool,), "true or false")
INT = _type((int,), "an integer")
SCALAR = _type((str, int, float, bool), "a string or a number")
ID = _type((str, int), "a name or a number")
ANY: Check = lambda value, path: []  # noqa: E731 - a check like the others


def list_of(item: Check) -> Check:
    def check(value, path):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [p for i, v in enumerate(value) for p in item(v, f"{path}[{i}]")]

    return check


def map_of(item: Check) -> Check:
    def check(value, path):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {value!r}"]
        return [p for k, v in value.items() for p in item(v, f"{path}.{k}")]

    return check


def one_of(*checks: Check, name: str) -> Check:
    """The first check that passes wins; else one message naming what is expected."""

    def check(value, path):
        results = [c(value, path) for c in checks]
        if any(not problems for problems in results):
            return []
        # A value of one right outer shape gets its inner problems, not a vague message.
        inner = [p for p in results if not p[0].startswith(f"{path}: expected")]
        return inner[0] if inner else [f"{path}: expected {name}, got {value!r}"]

    return check


def record(fields: dict[str, Check], required: tuple[str, ...] = (), strict: bool = True) -> Check:
    """A mapping with known fields; an unknown field is a mistake (strict) or ignored."""

    def check(value, path):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {value!r}"]
        problems = [f"{path}.{key}: required" for key in required if key not in value]
        for key, item in value.items():
            if key in fields:
                if item is not None or key in required:
                    problems += fields[key](item, f"{path}.{key}")
            elif strict:
                problems.append(f"{path}.{key}: unknown field; known: {', '.join(fields)}")
        return problems

    return check


STR_OR_LIST = one_of(STR, list_of(STR), name="a list or a string")
