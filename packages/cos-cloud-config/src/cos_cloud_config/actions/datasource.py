"""datasource: which sources of user-data to read. Offline, that is the NoCloud volume
(yip calls it `nocloud` or `cdrom`); the cloud providers need their metadata services."""

from cos_cloud_config import nocloud, schema
from cos_cloud_config.context import Context, StepError

DATASOURCE = schema.record({"providers": schema.list_of(schema.STR), "path": schema.STR})
OFFLINE = ("nocloud", "cdrom")


def datasource(ctx: Context, spec: dict) -> None:
    if spec.get("path") not in (None, "/oem", "/oem/"):
        ctx.warn(f"datasource path {spec['path']!r}: the NoCloud data is kept in /oem/nocloud")
    providers = [p.lower() for p in spec.get("providers") or list(OFFLINE)]
    for provider in providers:
        if provider not in OFFLINE:
            ctx.warn(
                f"datasource {provider!r}: needs its metadata service on the network; not supported"
            )
    if ctx.dry_run or not ctx.live or not set(providers) & set(OFFLINE):
        return
    errors: list[str] = []
    nocloud.refresh(ctx.root, errors)
    if errors:
        raise StepError("; ".join(errors))


def providers_asked(documents) -> set[str] | None:
    """The providers the configs name in datasource steps; None when none does."""
    asked = None
    for doc in documents:
        stages = doc.data.get("stages")
        for steps in stages.values() if isinstance(stages, dict) else []:
            for step in steps if isinstance(steps, list) else []:
                spec = step.get("datasource") if isinstance(step, dict) else None
                if isinstance(spec, dict) and isinstance(spec.get("providers"), list):
                    asked = (asked or set()) | {str(p).lower() for p in spec["providers"]}
    return asked
