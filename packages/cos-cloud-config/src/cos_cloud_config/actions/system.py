"""Host identity and kernel settings: hostname, /etc/hosts, DNS, sysctl, modules, the
environment, time zone and time servers."""

import os
import re
import socket

from cos_cloud_config import schema
from cos_cloud_config.context import Context, StepError, each, write_text_if_changed

HOSTS = schema.map_of(
    schema.one_of(schema.STR, schema.list_of(schema.STR), name="a name or a list of names")
)
DNS = schema.record(
    {
        "nameservers": schema.list_of(schema.STR),
        "search": schema.list_of(schema.STR),
        "options": schema.list_of(schema.STR),
    }
)
SYSCTL = schema.map_of(schema.SCALAR)
ENVIRONMENT = schema.map_of(schema.SCALAR)
TIMESYNCD = schema.map_of(schema.SCALAR)
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$"
)


def hostname(ctx: Context, name: str) -> None:
    """The name as given in /etc/hostname and the kernel, and on the 127.0.1.1 line of
    /etc/hosts with its short form (Debian's convention), so it resolves."""
    name = str(name)
    if not HOSTNAME_RE.match(name):
        raise StepError(f"{name!r} is not a valid host name")
    if ctx.dry_run:
        return
    write_text_if_changed(ctx.path("/etc/hostname"), name + "\n", mode=0o644)
    short = name.split(".")[0]
    set_hosts_line(ctx, "127.0.1.1", [name, short] if name != short else [name])
    if ctx.live and socket.gethostname() != name:
        socket.sethostname(name)


def set_hosts_line(ctx: Context, address: str, names: list[str]) -> None:
    path = ctx.path("/etc/hosts")
    lines = path.read_text().splitlines() if path.exists() else []
    line = "\t".join([address, *names])
    kept = [x for x in lines if x.split()[:1] != [address]]
    # In the place of the old line, so a second run leaves the file as it is.
    at = next((i for i, x in enumerate(lines) if x.split()[:1] == [address]), len(kept))
    kept.insert(min(at, len(kept)), line)
    write_text_if_changed(path, "\n".join(kept) + "\n", mode=0o644)


def hosts(ctx: Context, entries: dict) -> None:
    """Lines of /etc/hosts by address: `10.0.2.2: [gateway, gw]`; one line per address."""
    if ctx.dry_run:
        return
    for address, names in entries.items():
        set_hosts_line(ctx, str(address), [names] if isinstance(names, str) else list(names))


def dns(ctx: Context, spec: dict) -> None:
    lines = [f"nameserver {server}" for server in spec.get("nameservers") or []]
    if spec.get("search"):
        lines.append("search " + " ".join(spec["search"]))
    if spec.get("options"):
        lines.append("options " + " ".join(spec["options"]))
    path = ctx.path("/etc/resolv.conf")
    if ctx.dry_run:
        return
    if path.is_symlink():
        path.unlink()  # a resolver's link (resolved's stub): the config asks for these servers
    write_text_if_changed(
        path, "# Written by cos-cloud-config (dns)\n" + "\n".join(lines) + "\n", mode=0o644
    )


def sysctl(ctx: Context, settings: dict) -> None:
    """Applied now on the running system; written to sysctl.d in a target root."""
    if ctx.dry_run:
        return
    if not ctx.live:
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        write_text_if_changed(ctx.path("/etc/sysctl.d/90-cos-cloud-config.conf"), text, mode=0o644)
        return

    def write(item: tuple) -> None:
        key, value = item
        try:
            with open("/proc/sys/" + str(key).replace(".", "/"), "w") as f:
                f.write(str(value))
        except OSError as exc:
            raise StepError(exc.strerror or str(exc)) from None

    each(settings.items(), write, label=lambda item: f"{item[0]}={item[1]}")


def environment(ctx: Context, variables: dict) -> None:
    """KEY=value lines in /etc/environment, or the step's environment_file; a key already
    there gets the new value in its place."""
    target = ctx.path(ctx.step.get("environment_file") or "/etc/environment")
    lines = target.read_text().splitlines() if target.exists() else []
    for key, value in variables.items():
        line = f"{key}={_quote(value)}"
        at = next((i for i, x in enumerate(lines) if x.split("=", 1)[0].strip() == str(key)), None)
        if at is None:
            lines.append(line)
        else:
            lines[at] = line
    if not ctx.dry_run:
        write_text_if_changed(target, "\n".join(lines) + "\n")


def _quote(value) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f'"{text}"' if re.search(r"[\s#\"'$]", text) else text


def modules(ctx: Context, names: list[str]) -> None:
    if ctx.dry_run:
        return
    if not ctx.live:
        text = "".join(f"{name}\n" for name in names)
        write_text_if_changed(
            ctx.path("/etc/modules-load.d/90-cos-cloud-config.conf"), text, mode=0o644
        )
        return
    each(names, lambda name: ctx.run(["modprobe", str(name)], f"modprobe {name}"))


def timesyncd(ctx: Context, settings: dict) -> None:
    text = "[Time]\n" + "".join(f"{key}={value}\n" for key, value in settings.items())
    path = ctx.path("/etc/systemd/timesyncd.conf.d/90-cos-cloud-config.conf")
    changed = not ctx.dry_run and write_text_if_changed(path, text, mode=0o644)
    if not ctx.path("/usr/lib/systemd/systemd-timesyncd").exists():
        ctx.warn("timesyncd: written, but this image has no systemd-timesyncd to read it")
    elif changed and ctx.live:
        ctx.run(["systemctl", "try-restart", "systemd-timesyncd.service"], "restarting timesyncd")


def timezone(ctx: Context, zone: str) -> None:
    zoneinfo = f"/usr/share/zoneinfo/{zone}"
    if not ctx.path(zoneinfo).is_file():
        raise StepError(f"unknown time zone {zone!r} (no {zoneinfo})")
    if ctx.dry_run:
        return
    link = ctx.path("/etc/localtime")
    if not (link.is_symlink() and os.readlink(link) == zoneinfo):
        temporary = link.with_name(".localtime.cos-new")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(zoneinfo)
        os.replace(temporary, link)
    write_text_if_changed(ctx.path("/etc/timezone"), zone + "\n", mode=0o644)
