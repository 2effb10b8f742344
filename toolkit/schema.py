"""Reading YAML config files with errors that name the file, the field and what is wrong."""

from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import CosError


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CosError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CosError(f"{path}:{where}: malformed YAML: {problem}") from None
    if not isinstance(data, dict):
        raise CosError(
            f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}"
        )
    return data


class Fields:
    """Typed access to a mapping read from `path`; every complaint names path and field."""

    def __init__(self, path: Path, data: dict[str, Any], known: set[str]):
        self.path = path
        self.data = data
        unknown = sorted(set(data) - known)
        if unknown:
            self.fail(unknown[0], f"unknown field; known fields: {', '.join(sorted(known))}")

    def fail(self, field: str, message: str) -> None:
        raise CosError(f"{self.path}: field '{field}': {message}")

    def get(
        self, field: str, kind: type | tuple[type, ...], default: Any = ..., required: bool = False
    ):
        if field not in self.data or self.data[field] is None:
            if required or default is ...:
                self.fail(field, "is required")
            return default
        value = self.data[field]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            self.fail(field, f"must be {names}, got {value!r}")
        return value

    def string(self, field: str, default: Any = ...) -> str:
        value = self.get(field, (str, int, float), default)
        return value if value is default and default is not ... else str(value)

    def string_list(self, field: str, default: Any = ...) -> list[str]:
        value = self.get(field, list, default)
        for index, item in enumerate(value or []):
            if not isinstance(item, str) or not item:
                self.fail(f"{field}[{index}]", f"must be a non-empty string, got {item!r}")
        return value

    def string_map(self, field: str, default: Any = ...) -> dict[str, str]:
        value = self.get(field, dict, default)
        for key, item in (value or {}).items():
            if not isinstance(item, str):
                self.fail(f"{field}.{key}", f"must be a string, got {item!r}")
        return value
