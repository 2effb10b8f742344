"""Layers point one way: the harness (vm/) may use the toolkit, the toolkit never the harness."""

import ast
from pathlib import Path

import toolkit

TOOLKIT = Path(toolkit.__file__).parent


def imported_names(source: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(source.read_bytes(), str(source))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_toolkit_module_imports_vm():
    offenders = [
        f"{source.name}:{line} imports {name}"
        for source in sorted(TOOLKIT.rglob("*.py"))
        for line, name in imported_names(source)
        if name == "vm" or name.startswith("vm.")
    ]
    assert offenders == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def boot():\n    from vm.machine import Machine\n    import vm\n")
    assert imported_names(module) == [(2, "vm.machine"), (3, "vm")]
