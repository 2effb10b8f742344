"""`cos`: the command line of the agent. One module per verb; this one only parses."""

import argparse
import json
import sys

from cos.errors import CosError

UPGRADE_HELP = """\
Resolve REF to a digest once, pull this arch's image by digest (every blob checked), verify
its signature with the keys in /etc/cos/keys, write it as a new slot and switch to it at
the next boot, which is a trial: a new system that does not come up healthy is left for
the previous one by itself. Without --image, IMAGE= from /oem/cos/upgrade.conf or
/etc/cos/upgrade.conf is used."""

ROLLBACK_HELP = """\
Switch to the previous system: the passive slot becomes active from the next boot on, and
the slot running now becomes passive. The switch lasts; `cos rollback` again returns.
With --once, only the next boot starts the passive slot and the one after returns to
active. /usr/local and the persistent paths are kept either way."""


def cmd_status(args) -> int:
    from cos import status

    gathered = status.gather()
    print(json.dumps(gathered, indent=2, sort_keys=True) if args.json else status.render(gathered))
    return 0


def cmd_mark_good(args) -> int:
    from cos.assess import mark_good

    print(mark_good())
    return 0


def cmd_mark_bad(args) -> int:
    from cos.assess import mark_bad

    print(mark_bad(" ".join(args.reason), reboot=not args.no_reboot))
    return 0


def cmd_rollback(args) -> int:
    from cos.rollback import rollback

    print(rollback(once=args.once))
    return 0


def cmd_upgrade(args) -> int:
    from cos import upgrade

    reference = args.image or upgrade.default_reference()
    print(upgrade.upgrade(reference, check=not args.no_verify, dry_run=args.dry_run))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cos", description="cOS agent")
    sub = top.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="show the slots, the boot assessment and history")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    upgrade = sub.add_parser(
        "upgrade", help="pull a signed image and make it the next system",
        description=UPGRADE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    upgrade.add_argument("--image", metavar="REF", help="registry/repository:tag or @digest")
    upgrade.add_argument(
        "--no-verify", action="store_true", help="DANGER: skip the signature check"
    )
    upgrade.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    upgrade.set_defaults(func=cmd_upgrade)
    rollback = sub.add_parser(
        "rollback", help="boot the previous system (passive slot) from now on",
        description=ROLLBACK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    rollback.add_argument("--once", action="store_true", help="only for the next boot")
    rollback.set_defaults(func=cmd_rollback)
    good = sub.add_parser("mark-good", help="this boot passed its health checks")
    good.set_defaults(func=cmd_mark_good)
    bad = sub.add_parser("mark-bad", help="this boot failed: on a trial boot, reboot to fall back")
    bad.add_argument("reason", nargs="+")
    bad.add_argument("--no-reboot", action="store_true", help="record the reason only")
    bad.set_defaults(func=cmd_mark_bad)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (CosError, OSError) as exc:  # what the user reads: one line, not a traceback
        print(f"cos {args.command}: {exc}", file=sys.stderr)
        return 1
