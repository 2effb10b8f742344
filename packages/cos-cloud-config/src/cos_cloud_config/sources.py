"""Where cloud-config comes from, in the order it applies: /system/oem, /oem,
/usr/local/cloud-config (each in file-name order), a `cos.setup=` file or URL on the kernel
command line, then the NoCloud seed (vendor-data before user-data)."""

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cos_cloud_config import nocloud
from cos_cloud_config.nocloud import SafeLoader

DIRECTORIES = ["system/oem", "oem", "usr/local/cloud-config"]
SETUP_ARGUMENT = "cos.setup="
FETCH_TIMEOUT = 10


@dataclass
class Document:
    origin: str  # the file (and part) it came from, for every message about it
    data: dict = field(default_factory=dict)  # a config: stage syntax and/or cloud-init keys
    script: str | None = None  # a user-data shell script (`#!`), run at the network stage
    boothook: str | None = None  # a `#cloud-boothook`, run early at every boot


@dataclass
class Loaded:
    documents: list[Document] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seed: nocloud.Seed | None = None

    @property
    def meta_data(self) -> dict:
        return self.seed.meta_data if self.seed else {}


def parse_yaml(text: str, origin: str, loaded: Loaded) -> None:
    try:
        data = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        loaded.errors.append(
            f"{origin}:{where} malformed YAML: {problem}; nothing in this file applies"
        )
        return
    if data is None:
        return
    if not isinstance(data, dict):
        loaded.errors.append(
            f"{origin}: expected a mapping at the top level, got {type(data).__name__}"
        )
        return
    loaded.documents.append(Document(origin, data))


def parse_user_data(raw: bytes, origin: str, loaded: Loaded) -> None:
    """cloud-init's user-data formats: #cloud-config (or the stage syntax), a `#!` script,
    a #cloud-boothook, a MIME multi-part archive of those; gzip-compressed or not."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            loaded.errors.append(f"{origin}: not valid gzip: {exc}")
            return
    text = raw.decode("utf-8", errors="replace")
    head = text.lstrip()[:200].lower()
    if head.startswith(("content-type:", "mime-version:")):
        _parse_multipart(text, origin, loaded)
    elif text.startswith("#!"):
        loaded.documents.append(Document(origin, script=text))
    elif text.startswith("#cloud-boothook"):
        loaded.documents.append(
            Document(origin, boothook=text.split("\n", 1)[1] if "\n" in text else "")
        )
    elif text.startswith(("#include", "#cloud-config-archive", "#part-handler", "## template")):
        kind = text.split(None, 1)[0]
        loaded.warnings.append(f"{origin}: {kind} user-data is not supported by cOS; ignored")
    else:
        parse_yaml(text, origin, loaded)


PART_TYPES = {
    "text/cloud-config": "#cloud-config\n",
    "text/x-shellscript": "",
    "text/cloud-boothook": "#cloud-boothook\n",
}


def _parse_multipart(text: str, origin: str, loaded: Loaded) -> None:
    """Each part applies in order, as its own document: lists such as users add up and a
    later scalar (hostname) wins, as with cloud-init's default merge."""
    import email  # here: its import is a noticeable part of a boot stage under emulation

    message = email.message_from_string(text)
    if not message.is_multipart():
        loaded.errors.append(f"{origin}: a MIME message that is not multipart")
        return
    for index, part in enumerate(p for p in message.walk() if not p.is_multipart()):
        kind = part.get_content_type()
        name = part.get_filename() or part.get_param("name") or f"part {index + 1}"
        where = f"{origin} ({name}, {kind})"
        payload = part.get_payload(decode=True) or b""
        if kind in PART_TYPES:
            body = payload.decode("utf-8", errors="replace")
            prefix = PART_TYPES[kind]
            parse_user_data(
                (body if body.startswith(prefix.strip() or "\0") else prefix + body).encode(),
                where,
                loaded,
            )
        elif kind == "text/x-include-url":
            loaded.warnings.append(
                f"{where}: fetching included URLs is not supported offline; ignored"
            )
        else:
            loaded.warnings.append(f"{where}: unknown part type; ignored")


def kernel_setup(cmdline: str) -> str | None:
    for argument in cmdline.split():
        if argument.startswith(SETUP_ARGUMENT):
            return argument[len(SETUP_ARGUMENT) :]
    return None


def read_setup(location: str, root: Path, loaded: Loaded) -> None:
    origin = f"{location} (cos.setup=)"
    try:
        if "://" in location:
            import urllib.request  # here: it pulls in http, email and ssl

            with urllib.request.urlopen(location, timeout=FETCH_TIMEOUT) as response:
                raw = response.read()
        else:
            raw = (root / location.lstrip("/")).read_bytes()
    except (OSError, ValueError) as exc:
        loaded.errors.append(f"{origin}: cannot read it: {getattr(exc, 'reason', None) or exc}")
        return
    parse_user_data(raw, origin, loaded)


def config_files(root: Path) -> list[Path]:
    found = []
    for directory in DIRECTORIES:
        folder = root / directory
        if folder.is_dir():
            found += sorted(
                (p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()),
                key=lambda p: p.name,
            )
    return found


def load(root: Path = Path("/"), extra: list[Path] = (), cmdline: str | None = None) -> Loaded:
    """Every source but NoCloud (add_seed), whose reading a datasource step may turn off."""
    loaded = Loaded()
    for path in [*config_files(root), *extra]:
        try:
            parse_yaml(path.read_text(), str(path), loaded)
        except (OSError, UnicodeDecodeError) as exc:
            loaded.errors.append(f"{path}: cannot read it: {exc}")
    if cmdline is None:
        cmdline = Path("/proc/cmdline").read_text() if root == Path("/") else ""
    setup = kernel_setup(cmdline)
    if setup:
        read_setup(setup, root, loaded)
    return loaded


def add_seed(loaded: Loaded, seed: nocloud.Seed | None) -> None:
    """The NoCloud seed's vendor-data, then its user-data (which may turn vendor-data off)."""
    loaded.seed = seed
    if seed is None:
        return
    if seed.new_instance:
        loaded.warnings.append(
            f"NoCloud: new instance {seed.instance_id}: its data replaces the kept copy"
        )
    before = len(loaded.documents)
    vendor = seed.where / "vendor-data"
    if vendor.exists():
        parse_user_data(vendor.read_bytes(), f"{vendor} (NoCloud vendor-data)", loaded)
    vendor_documents = loaded.documents[before:]
    user = seed.where / "user-data"
    if user.exists():
        parse_user_data(user.read_bytes(), f"{user} (NoCloud)", loaded)
    if _vendor_data_disabled(loaded.documents[before + len(vendor_documents) :]):
        loaded.documents = [
            d for d in loaded.documents if all(d is not v for v in vendor_documents)
        ]


def _vendor_data_disabled(user_documents: list[Document]) -> bool:
    """cloud-init's `vendor_data: {enabled: false}` in user-data turns vendor-data off."""
    for doc in user_documents:
        setting = doc.data.get("vendor_data")
        if isinstance(setting, dict) and setting.get("enabled") is False:
            return True
    return False
