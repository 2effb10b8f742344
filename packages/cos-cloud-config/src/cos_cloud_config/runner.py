"""`cos-cloud-config [options] STAGE...`: run stages' steps from every source, and
`cos-cloud-config validate FILE...`: check files without running anything.

A user's broken step is reported (journal, `cos status`) and the rest still runs; the
command fails only in strict mode (--strict, `strict: true` in a config, or cos.setup.strict
on the kernel command line), so a broken line never fails the unit nor rolls back an upgrade."""

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cos_cloud_config import nocloud, plan, sources, table
from cos_cloud_config.actions.datasource import OFFLINE, providers_asked
from cos_cloud_config.context import Context, StepError
from cos_cloud_config.plan import Step

RECORDS = Path("/run/cos/cloud-config")
NETWORK_CONFIG = "/etc/systemd/network/"


@dataclass
class Record:
    """The last run of a stage, for the journal and `cos status`."""

    stage: str
    root: str
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    applied: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def say(stage: str, message: str, error: bool = False) -> None:
    prefix = "ERROR " if error else ""
    print(
        f"cos-cloud-config {stage}: {prefix}{message}",
        file=sys.stderr if error else sys.stdout,
        flush=True,
    )


def condition_holds(ctx: Context, condition: str) -> bool:
    try:
        ctx.run(["sh", "-c", condition], "if")
    except StepError:
        return False
    return True


def run_step(ctx: Context, step: Step, record: Record, failed_names: set[str]) -> None:
    record.errors += step.dropped
    record.warnings += step.warnings
    if step.problems:
        record.failed += 1
        record.errors += step.problems
        failed_names.add(step.name or "")
        return
    blocked = [name for name in step.depends_on if name in failed_names]
    if blocked:
        record.skipped += 1
        failed_names.add(step.name or "")
        record.errors.append(
            f"{step.title}: skipped: it depends on {', '.join(map(repr, blocked))}, which failed"
        )
        return
    condition = step.fields.get("if")
    if condition and not ctx.dry_run and not condition_holds(ctx, condition):
        record.skipped += 1
        say(ctx.stage, f"{step.title}: skipped (if: {condition} is false)")
        return
    ctx.step = step.fields
    ctx.env = {**ctx.env, "COS_STAGE": ctx.stage}
    keys = [a.key for a in table.ACTIONS if a.key in step.fields]
    started = time.monotonic()
    problems = []
    for action in (table.BY_KEY[key] for key in keys):
        try:
            action.apply(ctx, step.fields[action.key])
        except (StepError, OSError) as exc:
            problems.append(f"{step.title}: {action.key}: {exc}")
    took = time.monotonic() - started
    verb = "would apply" if ctx.dry_run else "applied"
    if problems:
        record.failed += 1
        failed_names.add(step.name or "")
        record.errors += problems
        say(ctx.stage, f"{step.title}: {', '.join(keys)}: failed ({took:.2f} s)")
    else:
        record.applied += 1
        say(ctx.stage, f"{step.title}: {verb} {', '.join(keys) or 'nothing'} ({took:.2f} s)")


def run_stage(stage: str, loaded: sources.Loaded, ctx: Context) -> Record:
    record = Record(stage, str(ctx.root))
    ctx.stage = stage
    ctx.warnings = []
    if loaded.seed and loaded.seed.instance_id:
        ctx.env = {**ctx.env, "INSTANCE_ID": str(loaded.seed.instance_id)}
    steps = [s for part in plan.stage_parts(stage) for s in plan.steps_for(part, loaded)]
    failed_names: set[str] = set()
    for step in steps:
        run_step(ctx, step, record, failed_names)
    if not ctx.dry_run and ctx.live and any(_writes_network_config(s) for s in steps):
        try:
            # The boot stage runs beside systemd-networkd, not before it (it would hold the
            # network up by seconds under emulation), so networkd re-reads what it wrote.
            ctx.run(["networkctl", "reload"], "networkctl reload")
        except (StepError, OSError) as exc:
            record.errors.append(str(exc))
    record.warnings += ctx.warnings
    record.seconds = round(time.time() - record.started, 3)
    return record


def _writes_network_config(step: Step) -> bool:
    return any(
        isinstance(spec, dict) and str(spec.get("path", "")).startswith(NETWORK_CONFIG)
        for spec in step.fields.get("files") or []
    )


def load(root: Path, extra: list[Path], use_nocloud: bool) -> sources.Loaded:
    loaded = sources.load(root, extra)
    asked = providers_asked(loaded.documents)  # a datasource step may leave NoCloud out
    if use_nocloud and root == Path("/") and (asked is None or asked & set(OFFLINE)):
        sources.add_seed(loaded, nocloud.refresh(root, loaded.errors))
    for doc in loaded.documents:
        errors, warnings = plan.document_problems(doc)
        loaded.errors += errors
        loaded.warnings += warnings
    return loaded


def strict_asked(loaded: sources.Loaded, cmdline: str) -> bool:
    return "cos.setup.strict" in cmdline.split() or any(
        d.data.get("strict") is True for d in loaded.documents
    )


def save(record: Record) -> None:
    try:
        RECORDS.mkdir(parents=True, exist_ok=True)
        path = RECORDS / f"{record.stage}.json"
        temporary = path.with_suffix(".json.new")
        temporary.write_text(json.dumps(asdict(record), indent=1) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        say(record.stage, f"cannot record this run in {RECORDS}: {exc}", error=True)


def run(
    stages: list[str],
    root: Path,
    extra: list[Path],
    use_nocloud: bool,
    dry_run: bool,
    strict: bool,
    sources_root: Path = Path("/"),
) -> int:
    """The configs are those of the running system (sources_root): an install's hooks are
    the installer's (its NoCloud user-data, the --config file) acting on the target."""
    started = time.monotonic()
    loaded = load(sources_root, extra, use_nocloud)
    cmdline = Path("/proc/cmdline").read_text() if sources_root == Path("/") else ""
    strict = strict or strict_asked(loaded, cmdline)
    status = 0
    for index, stage in enumerate(stages):
        ctx = Context(root=root, dry_run=dry_run)
        record = run_stage(stage, loaded, ctx)
        if index == 0:
            # Problems of the sources themselves are told once, with the first stage.
            record.errors = loaded.errors + record.errors
            record.warnings = loaded.warnings + record.warnings
        for warning in record.warnings:
            say(stage, f"warning: {warning}")
        for error in record.errors:
            say(stage, error, error=True)
        counts = f"{record.applied} applied, {record.skipped} skipped, {record.failed} failed"
        say(stage, f"{counts}, {len(record.errors)} error(s) in {record.seconds:.2f} s")
        if not dry_run:
            save(record)
        if record.errors and strict:
            status = 1
    if len(stages) > 1:
        say("+".join(stages), f"done in {time.monotonic() - started:.2f} s")
    return status


def validate(paths: list[Path]) -> int:
    """Every problem a boot would report for these files, for every stage; nothing runs."""
    problems, warnings = [], []
    for path in paths:
        loaded = sources.Loaded()
        try:
            sources.parse_user_data(path.read_bytes(), str(path), loaded)
        except OSError as exc:
            problems.append(f"{path}: cannot read it: {exc.strerror or exc}")
            continue
        problems += loaded.errors
        for doc in loaded.documents:
            errors, doc_warnings = plan.document_problems(doc)
            problems += errors
            warnings += doc_warnings
        for stage in table.STAGES:
            for part in plan.stage_parts(stage):
                for step in plan.steps_for(part, loaded):
                    problems += step.problems + step.dropped
                    warnings += step.warnings
        warnings += loaded.warnings
    for warning in dict.fromkeys(warnings):
        print(f"warning: {warning}")
    for problem in dict.fromkeys(problems):
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(paths)} file(s): {len(set(problems))} error(s), {len(set(warnings))} warning(s)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["validate"]:
        parser = argparse.ArgumentParser(
            prog="cos-cloud-config validate", description=validate.__doc__
        )
        parser.add_argument("files", nargs="+", type=Path)
        return validate(parser.parse_args(argv[1:]).files)
    parser = argparse.ArgumentParser(
        prog="cos-cloud-config", description="Run cloud-config stages."
    )
    parser.add_argument(
        "stages",
        nargs="+",
        metavar="STAGE",
        help=f"one of {', '.join(table.STAGES)} (with .before/.after)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="act on this root (a target being installed); the configs read are this system's",
    )
    parser.add_argument(
        "--file", dest="files", action="append", type=Path, default=[], help="an extra config file"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be applied; change nothing"
    )
    parser.add_argument("--strict", action="store_true", help="fail when a step fails")
    parser.add_argument("--no-cidata", action="store_true", help="do not read the NoCloud volume")
    args = parser.parse_args(argv)
    unknown = [s for s in args.stages if not table.valid_stage(s)]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r}; known: {', '.join(table.STAGES)}")
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: not a directory")
    return run(
        args.stages, args.root.resolve(), args.files, not args.no_cidata, args.dry_run, args.strict
    )
