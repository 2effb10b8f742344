"""commands: shell lines or argv lists, run inside the root."""

import shlex

from cos_cloud_config import schema
from cos_cloud_config.context import Context, each

COMMAND = schema.one_of(
    schema.STR, schema.list_of(schema.SCALAR), name="a command line or an argv list"
)
COMMANDS = schema.list_of(COMMAND)


def argv_of(command) -> list[str]:
    """A string runs through the shell, a list as argv (cloud-init's convention)."""
    return ["sh", "-c", command] if isinstance(command, str) else [str(c) for c in command]


def commands(ctx: Context, entries: list) -> None:
    """Each command runs even when one before it failed; the failures are reported
    together, each with its exit status and the tail of its output."""
    if not ctx.dry_run:
        each(
            enumerate(entries),
            lambda item: ctx.run(argv_of(item[1]), f"[{item[0]}] {_short(item[1])}"),
        )


def script(lines: list) -> str:
    """cloud-init's runcmd/bootcmd: one shell script, a line per entry (argv lists
    quoted), so a `cd` holds for the lines after it and a failing line does not stop it."""
    return "\n".join(
        line if isinstance(line, str) else shlex.join(map(str, line)) for line in lines
    )


def _short(command) -> str:
    text = command if isinstance(command, str) else shlex.join(map(str, command))
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
