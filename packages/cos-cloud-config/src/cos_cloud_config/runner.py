"""`cos-cloud-config STAGE`: run one stage's steps from every source."""

import argparse
import sys
from pathlib import Path

from cos_cloud_config import actions
from cos_cloud_config.sources import load_all
from cos_cloud_config.stages import STAGES, steps_for, valid_stage

NETWORK_CONFIG = "/etc/systemd/network/"


def run_step(where: str, step: dict) -> list[str]:
    errors = []

    def attempt(what, func, *args):
        try:
            func(*args)
        except Exception as exc:  # noqa: BLE001 - one broken step must not stop the others
            errors.append(f"{where}: {what}: {exc}")

    if "hostname" in step:
        attempt("hostname", actions.set_hostname, step["hostname"])
    for name, spec in (step.get("users") or {}).items():
        attempt(f"users.{name}", actions.ensure_user, name, spec or {})
    for user, keys in (step.get("ssh_authorized_keys") or {}).items():
        attempt(f"ssh_authorized_keys.{user}", actions.add_authorized_keys, user, keys)
    for index, spec in enumerate(step.get("files") or []):
        attempt(
            f"files[{index}] {spec.get('path', '?') if isinstance(spec, dict) else spec}",
            actions.write_file,
            spec,
        )
    for index, command in enumerate(step.get("commands") or []):
        attempt(f"commands[{index}]", actions.run_command, command)
    return errors


def writes_network_config(step: dict) -> bool:
    return any(
        isinstance(spec, dict) and str(spec.get("path", "")).startswith(NETWORK_CONFIG)
        for spec in step.get("files") or []
    )


def reload_network() -> list[str]:
    """The boot stage runs beside systemd-networkd, not before it (it would hold up the
    network by seconds under emulation), so networkd re-reads what the stage wrote."""
    try:
        actions.run_command(["networkctl", "reload"])
    except (RuntimeError, OSError) as exc:
        return [f"networkctl reload: {exc}"]
    return []


def run_stage(stage: str, extra: list[Path], use_cidata: bool) -> int:
    """A bare stage name runs its .before, itself and its .after, reading sources once."""
    loaded = load_all(extra, use_cidata)
    parts = [stage] if "." in stage else [f"{stage}.before", stage, f"{stage}.after"]
    steps = [step for part in parts for step in steps_for(part, loaded)]
    errors = list(loaded.errors)  # steps_for adds what it finds wrong
    for where, step in steps:
        print(f"cos-cloud-config {stage}: {where}{' ' + step['name'] if step.get('name') else ''}")
        errors += run_step(where, step)
    if any(writes_network_config(step) for _, step in steps):
        errors += reload_network()
    for error in errors:
        print(f"cos-cloud-config {stage}: ERROR {error}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cos-cloud-config")
    parser.add_argument("stage", help=f"one of {', '.join(STAGES)} (with .before/.after)")
    parser.add_argument("files", nargs="*", type=Path, help="extra cloud-config files")
    parser.add_argument("--no-cidata", action="store_true", help="do not read the NoCloud volume")
    args = parser.parse_args(argv)
    if not valid_stage(args.stage):
        parser.error(f"unknown stage {args.stage!r}; known: {', '.join(STAGES)}")
    return run_stage(args.stage, args.files, not args.no_cidata)
