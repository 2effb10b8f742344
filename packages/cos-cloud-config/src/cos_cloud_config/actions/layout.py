"""layout: grow a partition (by label or device) and its file system, e.g. COS_PERSISTENT
to the end of the disk on the first boot. A partition already grown costs no process."""

from pathlib import Path

from cos_cloud_config import schema
from cos_cloud_config.context import Context, StepError

LAYOUT = schema.record(
    {
        "device": schema.record({"label": schema.STR, "path": schema.STR}),
        "expand_partition": schema.record({"size": schema.INT}),
    },
    required=("device",),
)
SECTOR = 512
GPT_BACKUP_SECTORS = 34
SLACK_SECTORS = 2048  # alignment leaves up to 1 MiB unused at the end


def _find(ctx: Context, device: dict) -> str:
    if device.get("path"):
        return device["path"]
    if not device.get("label"):
        raise StepError("device: give a label or a path")
    found = ctx.run(
        ["blkid", "-L", device["label"]],
        f"finding the partition labelled {device['label']}",
        inside=False,
    )
    return found.strip()


def layout(ctx: Context, spec: dict) -> None:
    if not ctx.live:
        raise StepError("layout acts on the running system's disks, not on a target root")
    partition = _find(ctx, spec["device"])
    name = Path(partition).resolve().name
    sysfs = Path("/sys/class/block") / name
    if not (sysfs / "partition").exists():
        raise StepError(f"{partition} is not a partition")
    disk = sysfs.resolve().parent.name
    number = (sysfs / "partition").read_text().strip()
    start = int((sysfs / "start").read_text())
    size = int((sysfs / "size").read_text())
    disk_sectors = int((Path("/sys/class/block") / disk / "size").read_text())
    wanted_mib = (spec.get("expand_partition") or {}).get("size", 0)
    end_limit = disk_sectors - GPT_BACKUP_SECTORS
    wanted = end_limit - start if not wanted_mib else wanted_mib * (1 << 20) // SECTOR
    if size + SLACK_SECTORS >= min(wanted, end_limit - start):
        return  # grown already: nothing to do at this boot
    if start + wanted > end_limit:
        raise StepError(f"{partition}: {wanted_mib} MiB does not fit on /dev/{disk}")
    if ctx.dry_run:
        return
    size_arg = "+" if not wanted_mib else f"{wanted_mib}M"
    ctx.run(
        ["sfdisk", "--relocate", "gpt-bak-std", f"/dev/{disk}"],
        "moving the backup GPT to the disk's end",
    )
    ctx.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-N", number, f"/dev/{disk}"],
            f"growing partition {number} of /dev/{disk}", input=f", {size_arg}\n")  # fmt: skip
    ctx.run(["partx", "-u", "-n", number, f"/dev/{disk}"], "telling the kernel the new size")
    fstype = ctx.run(
        ["blkid", "-o", "value", "-s", "TYPE", partition], f"reading {partition}'s file system"
    ).strip()
    if fstype.startswith("ext"):
        ctx.run(["resize2fs", partition], f"growing the {fstype} file system on {partition}")
    elif fstype == "xfs":
        mountpoint = ctx.run(
            ["findmnt", "-n", "-o", "TARGET", partition], "finding where it is mounted"
        )
        ctx.run(
            ["xfs_growfs", mountpoint.splitlines()[0]],
            f"growing the xfs file system on {partition}",
        )
    else:
        ctx.warn(f"{partition}: grown; its file system {fstype or '(none)'} is left as it is")
