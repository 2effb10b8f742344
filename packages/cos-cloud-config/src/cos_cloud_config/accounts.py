"""Users and groups as the root being configured knows them (its /etc/passwd and
/etc/group, not the host's: an install hook acts on the target's accounts)."""

from pathlib import Path

from cos_cloud_config.context import Context, StepError


def _table(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(":") for line in path.read_text().splitlines() if line and line[0] != "#"]


def user(ctx: Context, name: str) -> list[str] | None:
    """The passwd entry [name, x, uid, gid, gecos, home, shell] of `name`, or None."""
    return next((e for e in _table(ctx.path("/etc/passwd")) if e[0] == name), None)


def uid(ctx: Context, owner: str | int) -> int:
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    entry = user(ctx, str(owner))
    if entry is None:
        raise StepError(f"no user {owner!r} in {ctx.path('/etc/passwd')}")
    return int(entry[2])


def gid(ctx: Context, group: str | int) -> int:
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    entry = next((e for e in _table(ctx.path("/etc/group")) if e[0] == group), None)
    if entry is None:
        raise StepError(f"no group {group!r} in {ctx.path('/etc/group')}")
    return int(entry[2])


def group_exists(ctx: Context, name: str) -> bool:
    return any(e[0] == name for e in _table(ctx.path("/etc/group")))


def tool(ctx: Context, name: str) -> list[str]:
    """shadow's tools take --root themselves: they need nothing inside the root."""
    return [name] if ctx.live else [name, "--root", str(ctx.root)]
