"""Running a command on the machine: a failure becomes a CosError carrying its stderr."""

import subprocess

from cos.errors import CosError


def run(args: list[str], what: str | None = None, input: bytes | None = None) -> str:
    """Run `args`; return its stdout, or raise a CosError naming `what` and its stderr."""
    try:
        result = subprocess.run(args, input=input, capture_output=True, check=False)
    except FileNotFoundError:
        raise CosError(f"{what or args[0]}: {args[0]} not found") from None
    if result.returncode != 0:
        err = result.stderr.decode(errors="replace").strip()
        raise CosError(f"{what or ' '.join(args)} failed (exit {result.returncode}): {err}")
    return result.stdout.decode(errors="replace")


def probe(args: list[str]) -> str:
    """stdout of a query whose failure only means "nothing found"."""
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else ""
