"""How people log in: password hashes (chpasswd), password logins over SSH, root's keys."""

from pathlib import Path

from cos_cloud_config import accounts, schema
from cos_cloud_config.actions.users import add_authorized_keys
from cos_cloud_config.context import Context, StepError, write_text_if_changed

CHPASSWD = schema.record(
    {
        "users": schema.list_of(
            schema.record(
                {"name": schema.STR, "password": schema.STR, "type": schema.STR}, ("name",)
            )
        ),
        "list": schema.one_of(schema.STR, schema.list_of(schema.STR), name="a list of user:hash"),
        "expire": schema.BOOL,
    }
)
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/50-cloud-init.conf"
# cloud-init's default disable_root_opts: a key that answers with a message, not a shell.
DISABLE_ROOT_OPTIONS = (
    "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as "
    "a user other than root.';echo;sleep 10;exit 142\""
)


def is_hash(password: str) -> bool:
    return password.startswith("$") and password.count("$") >= 3


def chpasswd(ctx: Context, spec: dict) -> None:
    """Hashed entries only: a clear-text password in a config file is refused, by name."""
    entries = [
        (u["name"], u.get("password", ""), u.get("type", "hash")) for u in spec.get("users") or []
    ]
    listed = spec.get("list") or []
    for line in listed.splitlines() if isinstance(listed, str) else listed:
        name, _, password = line.partition(":")
        entries.append(
            (name.strip(), password.strip(), "hash" if is_hash(password.strip()) else "text")
        )
    hashed = []
    for name, password, kind in entries:
        if kind != "hash" or not is_hash(password):
            ctx.warn(f"chpasswd: {name}: a clear-text or random password is refused; give a hash")
        elif accounts.user(ctx, name) is None:
            raise StepError(f"chpasswd: no user {name!r}")
        else:
            hashed.append((name, password))
    if ctx.dry_run or not hashed:
        return
    lines = "".join(f"{name}:{password}\n" for name, password in hashed)
    ctx.run([*accounts.tool(ctx, "chpasswd"), "--encrypted"], "chpasswd", input=lines, inside=False)
    if spec.get("expire", True):
        for name, _ in hashed:
            ctx.run(
                [*accounts.tool(ctx, "chage"), "--lastday", "0", name],
                f"expiring {name}'s password",
                inside=False,
            )


def ssh_pwauth(ctx: Context, allowed: bool) -> None:
    setting = "yes" if allowed else "no"
    text = f"# Written by cos-cloud-config (ssh_pwauth)\nPasswordAuthentication {setting}\n"
    changed = not ctx.dry_run and write_text_if_changed(ctx.path(SSHD_DROP_IN), text)
    if changed and ctx.live and Path("/run/sshd.pid").exists():
        # sshd starts after the boot stage; a later stage has a running one reload.
        ctx.run(["systemctl", "try-reload-or-restart", "ssh.service"], "reloading sshd")


def disable_root(ctx: Context, disabled: bool) -> None:
    """cloud-init's disable_root: root's keys answer with a message instead of a shell."""
    if not disabled or ctx.dry_run:
        return
    path = ctx.path("/root/.ssh/authorized_keys")
    keys = path.read_text().splitlines() if path.exists() else []
    plain = [k for k in keys if k.startswith(("ssh-", "ecdsa-", "sk-"))]
    rest = [k for k in keys if k not in plain]
    if plain:
        write_text_if_changed(path, "\n".join(rest) + ("\n" if rest else ""), mode=0o600)
        add_authorized_keys(ctx, "root", plain, options=DISABLE_ROOT_OPTIONS)
