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
/etc/cos/upgrade.conf is used. With --recovery, the image becomes the recovery system
instead: made into a squashfs beside the current one on COS_RECOVERY, which the recovery
entry boots only once it is whole."""

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
    if args.recovery:
        from cos.reset import to_recovery

        print(to_recovery(reboot=False))
        return 0
    from cos.rollback import rollback

    print(rollback(once=args.once))
    return 0


INSTALL_HELP = """\
Write a cOS disk to DEVICE: the GPT layout (COS_GRUB, COS_OEM, COS_RECOVERY, COS_STATE,
COS_PERSISTENT growing to fill the disk), the system in the active slot and, as one copy,
the passive slot, the recovery image, and GRUB at the removable-media path, written last.
--local (the default) installs the running system (the installer's live system, recovery,
or this machine's slot); --image pulls and verifies an image as `cos upgrade` does.
Refuses a disk that is mounted or holds the running system, one too small (saying what is
needed), and one with partitions or a file system unless --force.
--auto does what the installer's kernel command line (cos.install=DEVICE,
cos.install.image=REF, cos.install.after=reboot|poweroff|none) or the NoCloud user-data's
`install:` section (device, image, config, after) asks; nothing when neither does."""

RESET_HELP = """\
From the recovery system: rewrite the active and passive slots from the recovery image (or
--image REF, verified as `cos upgrade` does), clear the boot assessment, the rollback and
the menu choices. /usr/local, the persistent paths (COS_PERSISTENT) and COS_OEM are kept
unless --wipe-persistent or --wipe-oem. `cos reboot --recovery` gets there."""


def cmd_install(args) -> int:
    from cos import install, layout

    if args.auto:
        from cos.autoinstall import auto_install

        print(auto_install())
        return 0
    if not args.device:
        raise_usage("cos install: DEVICE is required (or --auto)")
    print(
        install.install(
            args.device,
            image=args.image,
            config=args.config,
            persistent_mib=layout.parse_size_mib(args.persistent_size, "--persistent-size")
            if args.persistent_size
            else None,
            recovery_mib=layout.parse_size_mib(args.recovery_size, "--recovery-size")
            if args.recovery_size
            else None,
            verify=not args.no_verify,
            force=args.force,
        )
    )
    return 0


def raise_usage(message: str) -> None:
    from cos.errors import CosError

    raise CosError(message)


def cmd_reset(args) -> int:
    from cos.reset import reset

    print(
        reset(
            image=args.image,
            verify=not args.no_verify,
            wipe_persistent=args.wipe_persistent,
            wipe_oem=args.wipe_oem,
        )
    )
    return 0


def cmd_reboot(args) -> int:
    from cos.reset import to_recovery

    if args.recovery:
        print(to_recovery(reboot=True))
    else:
        import subprocess

        subprocess.run(["systemctl", "--no-block", "reboot"], check=True)
    return 0


def cmd_upgrade(args) -> int:
    from cos import upgrade

    reference = args.image or upgrade.default_reference()
    if args.recovery:
        from cos.recovery import upgrade_recovery

        print(upgrade_recovery(reference, check=not args.no_verify, dry_run=args.dry_run))
        return 0
    print(upgrade.upgrade(reference, check=not args.no_verify, dry_run=args.dry_run))
    return 0


def cmd_run_stage(args) -> int:
    from cos.stages import cloud_config

    options = [*(["--dry-run"] if args.dry_run else []), *(["--strict"] if args.strict else [])]
    return cloud_config([*args.stages, *options], "cos run-stage")


def cmd_cloud_config(args) -> int:
    from cos.stages import cloud_config

    return cloud_config(["validate", *args.files], "cos cloud-config validate")


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
    upgrade.add_argument(
        "--recovery", action="store_true",
        help="write the image as the recovery system instead (the slots stay as they are)",
    )  # fmt: skip
    upgrade.set_defaults(func=cmd_upgrade)
    rollback = sub.add_parser(
        "rollback", help="boot the previous system (passive slot) from now on",
        description=ROLLBACK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    rollback.add_argument("--once", action="store_true", help="only for the next boot")
    rollback.add_argument(
        "--recovery", action="store_true", help="the next boot only starts the recovery system"
    )
    rollback.set_defaults(func=cmd_rollback)
    inst = sub.add_parser(
        "install", help="write cOS to a disk", description=INSTALL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    inst.add_argument("device", nargs="?", metavar="DEVICE", help="the whole disk, e.g. /dev/vda")
    source = inst.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="REF", help="install this OCI image (pulled, verified)")
    source.add_argument(
        "--local", action="store_true", help="install the running system (the default)"
    )
    inst.add_argument("--config", metavar="FILE|URL", help="cloud-config stored on COS_OEM")
    inst.add_argument("--persistent-size", metavar="N", help="COS_PERSISTENT size (default: rest)")
    inst.add_argument("--recovery-size", metavar="N", help="COS_RECOVERY size (default: fitted)")
    inst.add_argument("--no-verify", action="store_true", help="DANGER: skip the signature check")
    inst.add_argument("--force", action="store_true", help="overwrite partitions on DEVICE")
    inst.add_argument("--auto", action="store_true", help="unattended: as the boot asks")
    inst.set_defaults(func=cmd_install)
    reset = sub.add_parser(
        "reset", help="from recovery: rewrite the system slots", description=RESET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    reset.add_argument("--image", metavar="REF", help="from this OCI image (pulled, verified)")
    reset.add_argument("--no-verify", action="store_true", help="DANGER: skip the signature check")
    reset.add_argument(
        "--wipe-persistent", action="store_true", help="empty COS_PERSISTENT (/usr/local, ...)"
    )
    reset.add_argument("--wipe-oem", action="store_true", help="empty COS_OEM (the user config)")
    reset.set_defaults(func=cmd_reset)
    reboot = sub.add_parser("reboot", help="reboot, with --recovery into the recovery system")
    reboot.add_argument("--recovery", action="store_true", help="the next boot only: recovery")
    reboot.set_defaults(func=cmd_reboot)
    stage = sub.add_parser("run-stage", help="run cloud-config stages now (--dry-run: show them)")
    stage.add_argument("stages", nargs="+", metavar="STAGE", help="boot, network, after-install...")
    stage.add_argument("--dry-run", action="store_true", help="show what would be applied")
    stage.add_argument("--strict", action="store_true", help="fail when a step fails")
    stage.set_defaults(func=cmd_run_stage)
    config = sub.add_parser("cloud-config", help="check cloud-config files")
    config_sub = config.add_subparsers(dest="action", required=True)
    validate = config_sub.add_parser("validate", help="report every problem a boot would")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_cloud_config)
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
