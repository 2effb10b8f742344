"""systemctl: enable, disable, mask, start and drop-in overrides of units.

/ is volatile on cOS and the stages run at every boot, so on the running system a unit
enabled (or disabled, masked) by a stage takes effect in this boot: it is started (or
stopped) without waiting, after a daemon-reload when a drop-in changed."""

from cos_cloud_config import schema
from cos_cloud_config.context import Context, StepError, write_text_if_changed

SYSTEMCTL = schema.record(
    {
        "enable": schema.list_of(schema.STR),
        "disable": schema.list_of(schema.STR),
        "mask": schema.list_of(schema.STR),
        "start": schema.list_of(schema.STR),
        "overrides": schema.list_of(
            schema.record(
                {"service": schema.STR, "name": schema.STR, "content": schema.STR},
                ("service", "content"),
            )
        ),
    }
)


def systemctl(ctx: Context, spec: dict) -> None:
    if ctx.dry_run:
        return
    changed = False
    for override in spec.get("overrides") or []:
        unit = (
            override["service"] if "." in override["service"] else override["service"] + ".service"
        )
        name = override.get("name") or "override-cos.conf"
        path = ctx.path(f"/etc/systemd/system/{unit}.d/{name}")
        changed |= write_text_if_changed(path, override["content"], mode=0o644)
    base = ["systemctl"] if ctx.live else ["systemctl", f"--root={ctx.root}"]
    problems = []

    def attempt(argv: list[str], what: str) -> None:
        try:
            ctx.run(argv, what, inside=False)
        except (StepError, OSError) as exc:
            problems.append(str(exc))

    if changed and ctx.live:
        attempt(["systemctl", "daemon-reload"], "systemctl daemon-reload")
    for verb in ("enable", "disable", "mask"):
        units = spec.get(verb) or []
        if units:
            attempt([*base, verb, *units], f"systemctl {verb} {' '.join(units)}")
    if ctx.live:
        enabled = spec.get("enable") or []
        stopped = [*(spec.get("disable") or []), *(spec.get("mask") or [])]
        if enabled:
            attempt(["systemctl", "start", "--no-block", *enabled], f"starting {' '.join(enabled)}")
        if stopped:
            # A unit that is not loaded has nothing to stop: that is not a failure.
            ctx.run(
                ["sh", "-c", 'systemctl stop --no-block "$@" || true', "-", *stopped], "stopping"
            )
    if spec.get("start"):
        if ctx.live:
            attempt(
                ["systemctl", "start", "--no-block", *spec["start"]],
                f"systemctl start {' '.join(spec['start'])}",
            )
        else:
            ctx.warn(f"systemctl start {' '.join(spec['start'])}: not started in a target root")
    if problems:
        raise StepError("; ".join(problems))
