"""users, ssh_authorized_keys and passwords, with shadow's own tools (useradd, usermod,
groupadd, chpasswd), given --root when the root is not the running system."""

import os

from cos_cloud_config import accounts, schema
from cos_cloud_config.context import Context, StepError, each, write_text_if_changed

USER_FIELDS = {
    "passwd": schema.STR,
    "lock_passwd": schema.BOOL,
    "groups": schema.STR_OR_LIST,
    "primary_group": schema.STR,
    "shell": schema.STR,
    "homedir": schema.STR,
    "no_create_home": schema.BOOL,
    "system": schema.BOOL,
    "uid": schema.one_of(schema.INT, schema.STR, name="a number"),
    "gecos": schema.STR,
    "ssh_authorized_keys": schema.list_of(schema.STR),
    "sudo": schema.one_of(
        schema.STR,
        schema.list_of(schema.STR),
        schema.BOOL,
        name="a rule, a list of rules or false",
    ),
}
USER = schema.record(USER_FIELDS)
USERS = schema.map_of(USER)
AUTHORIZED_KEYS = schema.map_of(schema.list_of(schema.STR))
SUDOERS = "/etc/sudoers.d/90-cloud-init-users"  # cloud-init's file, so existing docs apply
OFFLINE_KEY_SOURCES = ("github:", "gitlab:")


def group_list(groups) -> list[str]:
    """cloud-init accepts `groups: a, b` as well as a list."""
    if isinstance(groups, str):
        return [g.strip() for g in groups.split(",") if g.strip()]
    return [str(g) for g in groups or []]


def ensure_groups(ctx: Context, names: list[str], system: bool = False) -> None:
    for name in names:
        if not accounts.group_exists(ctx, name):
            argv = [*accounts.tool(ctx, "groupadd"), *(["--system"] if system else []), name]
            ctx.run(argv, f"groupadd {name}", inside=False)


def ensure_user(ctx: Context, name: str, spec: dict) -> None:
    groups = group_list(spec.get("groups"))
    primary = spec.get("primary_group")
    ensure_groups(ctx, groups + ([primary] if primary else []), system=bool(spec.get("system")))
    existing = accounts.user(ctx, name)
    if existing is None:
        argv = accounts.tool(ctx, "useradd")
        if spec.get("system"):
            argv.append("--system")
        if spec.get("no_create_home") or (spec.get("system") and not spec.get("homedir")):
            argv.append("--no-create-home")
        else:
            argv.append("--create-home")
        options = {
            "--shell": spec.get("shell"),
            "--home-dir": spec.get("homedir"),
            "--gid": primary,
            "--uid": spec.get("uid"),
            "--comment": spec.get("gecos"),
        }
        argv += [
            item
            for option, value in options.items()
            if value is not None
            for item in (option, str(value))
        ]
        if groups:
            argv += ["--groups", ",".join(groups)]
        ctx.run([*argv, name], f"useradd {name}", inside=False)
    else:
        changes = []
        if groups:
            changes += ["--append", "--groups", ",".join(groups)]
        if spec.get("shell") and existing[6] != spec["shell"]:
            changes += ["--shell", spec["shell"]]
        if changes:
            ctx.run(
                [*accounts.tool(ctx, "usermod"), *changes, name], f"usermod {name}", inside=False
            )
    if spec.get("passwd"):
        ctx.run([*accounts.tool(ctx, "usermod"), "--password", spec["passwd"], name],
                f"setting the password hash of {name}", inside=False)  # fmt: skip
    if spec.get("lock_passwd"):
        ctx.run([*accounts.tool(ctx, "usermod"), "--lock", name], f"locking {name}", inside=False)
    if spec.get("ssh_authorized_keys"):
        add_authorized_keys(ctx, name, spec["ssh_authorized_keys"])
    if spec.get("sudo"):
        rules = [spec["sudo"]] if isinstance(spec["sudo"], str) else spec["sudo"]
        ensure_lines(ctx, SUDOERS, [f"{name} {rule}" for rule in rules], mode=0o440)


def users(ctx: Context, specs: dict) -> None:
    if not ctx.dry_run:
        each(specs.items(), lambda item: ensure_user(ctx, str(item[0]), item[1] or {}), _name)


def add_authorized_keys(ctx: Context, user: str, keys: list[str], options: str = "") -> None:
    """Keys not there yet are added, in order; a second run adds nothing."""
    entry = accounts.user(ctx, user)
    if entry is None:
        raise StepError(f"no user {user!r} to give SSH keys to")
    wanted = []
    for key in keys:
        key = key.strip()
        if key.startswith(OFFLINE_KEY_SOURCES):
            ctx.warn(f"{user}: {key!r}: fetching keys needs the internet; ignored")
        elif key:
            wanted.append(f"{options} {key}".strip())
    if ctx.dry_run or not wanted:
        return
    ssh_dir = ctx.path(entry[5]) / ".ssh"
    path = ssh_dir / "authorized_keys"
    existing = path.read_text().splitlines() if path.exists() else []
    merged = existing + [
        k for k in wanted if k not in existing and _bare(k) not in map(_bare, existing)
    ]
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_text_if_changed(path, "\n".join(merged) + "\n", mode=0o600)
    for p in (ssh_dir, path):
        os.chown(p, int(entry[2]), int(entry[3]))


def _bare(line: str) -> str:
    """The key itself, without options in front (so disable_root does not add a twin)."""
    parts = line.split()
    for index, part in enumerate(parts):
        if part.startswith(("ssh-", "ecdsa-", "sk-")):
            return " ".join(parts[index : index + 2])
    return line


def authorized_keys(ctx: Context, specs: dict) -> None:
    each(specs.items(), lambda item: add_authorized_keys(ctx, str(item[0]), item[1]), _name)


def _name(item: tuple) -> str:
    return str(item[0])


def ensure_lines(ctx: Context, path: str, lines: list[str], mode: int | None = None) -> None:
    target = ctx.path(path)
    existing = target.read_text().splitlines() if target.exists() else []
    if ctx.dry_run:
        return
    write_text_if_changed(
        target, "\n".join(existing + [x for x in lines if x not in existing]) + "\n", mode
    )
