"""files and directories: content with an encoding, mode, owner and group."""

import base64
import gzip
import os

from cos_cloud_config import accounts, schema
from cos_cloud_config.context import Context, StepError, each, write_if_changed


def b64(content: str) -> bytes:
    """Strict base64 (line breaks allowed): garbage is an error, not an empty file."""
    return base64.b64decode("".join(content.split()), validate=True)


ENCODINGS = {
    "": str.encode,
    "text/plain": str.encode,
    "b64": b64,
    "base64": b64,
    "gzip+b64": lambda c: gzip.decompress(b64(c)),
    "gz+b64": lambda c: gzip.decompress(b64(c)),
    "gzip+base64": lambda c: gzip.decompress(b64(c)),
    "gz+base64": lambda c: gzip.decompress(b64(c)),
}
OWNERSHIP = {
    "permissions": schema.one_of(schema.INT, schema.STR, name="a mode like '0644'"),
    "owner": schema.ID,
    "group": schema.ID,
    "owner_string": schema.STR,
}
FILE = schema.record(
    {
        "path": schema.STR,
        "content": schema.one_of(schema.STR, schema.SCALAR, name="a string"),
        "encoding": schema.STR,
        "append": schema.BOOL,
        "defer": schema.BOOL,
        **OWNERSHIP,
    },
    required=("path",),
)
FILES = schema.list_of(FILE)
DIRECTORIES = schema.list_of(schema.record({"path": schema.STR, **OWNERSHIP}, required=("path",)))


def mode_of(permissions) -> int | None:
    """An integer is a mode already (YAML reads 0644 as octal); a string is octal text."""
    if permissions is None:
        return None
    if isinstance(permissions, int):
        return permissions
    try:
        return int(permissions, 8)
    except ValueError:
        raise StepError(f"permissions {permissions!r} is not an octal mode") from None


def owner_of(ctx: Context, spec: dict) -> tuple[int, int] | None:
    """cloud-init's `owner: user:group`, yip's owner/group (names or ids) or owner_string."""
    text = spec.get("owner_string")
    owner, group = spec.get("owner"), spec.get("group")
    if text is None and isinstance(owner, str) and ":" in owner:
        text = owner
    if text is not None:
        owner, _, group = str(text).partition(":")
        group = group or None
    if owner is None and group is None:
        return None
    uid = accounts.uid(ctx, owner) if owner not in (None, "") else -1
    gid = accounts.gid(ctx, group) if group not in (None, "") else -1
    return uid, gid


def decode(spec: dict) -> bytes:
    encoding = str(spec.get("encoding") or "").lower()
    if encoding not in ENCODINGS:
        raise StepError(
            f"unknown encoding {encoding!r}; known: {', '.join(e for e in ENCODINGS if e)}"
        )
    content = spec.get("content")
    try:
        return ENCODINGS[encoding]("" if content is None else str(content))
    except (ValueError, OSError, EOFError) as exc:
        raise StepError(f"content is not valid {encoding}: {exc}") from None


def write_file(ctx: Context, spec: dict) -> None:
    path = ctx.path(spec["path"])
    data = decode(spec)  # before touching the disk: a bad encoding writes nothing
    ownership = owner_of(ctx, spec)
    mode = mode_of(spec.get("permissions"))
    if ctx.dry_run:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.get("append"):
        # Appending the same text twice is what the user asked for on a second run only
        # if it is not there yet: a stage that runs every boot must not grow the file.
        existing = path.read_bytes() if path.exists() else b""
        if not existing.endswith(data):
            with open(path, "ab") as f:
                f.write(data)
    else:
        write_if_changed(path, data)
    if mode is not None:
        path.chmod(mode)
    if ownership:
        os.chown(path, *ownership)


def files(ctx: Context, specs: list[dict]) -> None:
    each(specs, lambda spec: write_file(ctx, spec), label=lambda spec: spec["path"])


def make_directory(ctx: Context, spec: dict) -> None:
    path = ctx.path(spec["path"])
    ownership = owner_of(ctx, spec)
    mode = mode_of(spec.get("permissions"))
    if ctx.dry_run:
        return
    path.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        path.chmod(mode)
    if ownership:
        os.chown(path, *ownership)


def directories(ctx: Context, specs: list[dict]) -> None:
    each(specs, lambda spec: make_directory(ctx, spec), label=lambda spec: spec["path"])
