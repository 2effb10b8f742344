"""`cos`: the command line of the agent."""

import argparse
import json
import sys

from cos import bootstate, osrelease


def cmd_status(args) -> int:
    release = osrelease.read()
    status = {
        "boot": bootstate.current_boot(),
        "flavor": release.get("VARIANT_ID", ""),
        "version": release.get("IMAGE_VERSION", release.get("VERSION_ID", "")),
        "pretty_name": release.get("PRETTY_NAME", ""),
    }
    try:
        status["grubenv"] = bootstate.read_grubenv()
    except Exception as exc:  # noqa: BLE001 - status must report, never crash
        status["grubenv_error"] = str(exc)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        boot = status["boot"]
        print(f"system:   {status['pretty_name']}")
        print(f"flavor:   {status['flavor']} {status['version']}")
        where = f"{boot.get('label', '?')}:{boot.get('image', '?')}"
        print(f"slot:     {boot.get('slot', 'unknown')} ({where})")
        env = status.get("grubenv", {})
        print(f"default:  {env.get('saved_entry', 'active')}")
        tentative = env.get("cos_tentative", "no") or "no"
        print(f"tentative: {tentative}  rollback: {env.get('cos_rollback', 'no')}")
    return 0


def cmd_mark_good(args) -> int:
    bootstate.mark_good()
    print("boot marked good")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cos", description="cOS agent")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="show the booted slot, version and boot assessment")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    good = sub.add_parser("mark-good", help="end the tentative state of this boot")
    good.set_defaults(func=cmd_mark_good)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
        print(f"cos {args.command}: {exc}", file=sys.stderr)
        return 1
