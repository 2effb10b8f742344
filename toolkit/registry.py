"""The local registry (Debian's docker-registry on 127.0.0.1) and a small client for it.

The client speaks the Distribution v2 HTTP API over urllib: enough to push an OCI layout
(image or multi-arch index), resolve a tag to a digest, and store/fetch cosign signatures
the way cosign does (a manifest tagged `sha256-<hex>.sig` beside the image).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

# The reading side (references, manifests, blobs, signatures) is the machines' own client.
from cos.registry import (
    CHUNK,
    MEDIA_SIMPLESIGNING,
    SIGNATURE_ANNOTATION,
    base_url,
    call,
    fetch_signature,
    fetch_signatures,
    get_manifest,
    header,
    opener,
    parse_reference,
    resolve_digest,
    signature_manifest,
    signature_tag,
)
from cos.signature import repository_of
from toolkit import oci, paths
from toolkit.errors import CosError

__all__ = ["fetch_signature", "fetch_signatures", "get_manifest", "resolve_digest"]

REGISTRY_BINARY = "docker-registry"

# ---------------------------------------------------------------- client


class _FileChunks:
    """A file's bytes, read anew each time it is iterated, so a request that an auth
    challenge sends back goes again whole. (A registry answering 401 to a large body closes
    the connection before reading it: uploads stream only once the POST that opened them
    got the repository's grant.)"""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


def _start_upload(host: str, repo: str) -> str:
    """A new blob upload session's URL (asking for it needs the right to push)."""
    base = f"{base_url(host)}/v2/{repo}"
    _, headers, _ = call("POST", f"{base}/blobs/uploads/", host, body=b"")
    return urllib.parse.urljoin(base + "/", header(headers, "Location") or "")


def probe_push(repository: str) -> None:
    """A CosError, naming the registry and what failed, unless repository takes pushes:
    an upload is started and cancelled, so nothing is written."""
    host, repo, _ = parse_reference(repository)
    location = _start_upload(host, repo)
    try:
        call("DELETE", location, host)
    except CosError:
        pass  # a registry that cannot cancel lets an unfinished upload expire


def _push_blob(host: str, repo: str, content: bytes | Path, digest: str | None = None) -> str:
    """Upload bytes, or a file streamed from disk (`digest` required: the manifest names
    it), unless the registry has the blob already; returns the blob's digest."""
    if isinstance(content, Path):
        if digest is None:
            raise TypeError("_push_blob: a file's digest comes from the manifest naming it")
        body: bytes | _FileChunks = _FileChunks(content)  # never held in memory
        size = content.stat().st_size
    else:
        digest, body, size = digest or oci.digest_of(content), content, len(content)
    base = f"{base_url(host)}/v2/{repo}"
    status, _, _ = call("HEAD", f"{base}/blobs/{digest}", host, missing_ok=True)
    if status == 200:
        return digest  # content-addressed: already there means the same bytes
    location = _start_upload(host, repo)
    separator = "&" if "?" in location else "?"
    # One monolithic PUT.
    call(
        "PUT",
        f"{location}{separator}digest={urllib.parse.quote(digest)}",
        host,
        body=body,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
    )
    return digest


def _put_manifest(host: str, repo: str, ref: str, data: bytes, media_type: str) -> str:
    digest = oci.digest_of(data)
    url = f"{base_url(host)}/v2/{repo}/manifests/{ref}"
    _, headers, _ = call("PUT", url, host, body=data, headers={"Content-Type": media_type})
    answered = header(headers, "Docker-Content-Digest")
    if answered and answered != digest:
        raise CosError(f"PUT {url}: registry stored {answered}, expected {digest}")
    return digest


def _push_image_manifest(host: str, repo: str, layout: Path, descriptor: dict, ref: str) -> str:
    data = oci.blob_path(layout, descriptor["digest"]).read_bytes()
    manifest = json.loads(data)
    for blob in [manifest["config"], *manifest["layers"]]:
        _push_blob(host, repo, oci.blob_path(layout, blob["digest"]), blob["digest"])
    return _put_manifest(host, repo, ref, data, descriptor["mediaType"])


def push_layout(layout_dir: Path, reference: str) -> str:
    """Push the image or image index of an OCI layout to reference; its manifest digest."""
    layout_dir = Path(layout_dir)
    host, repo, tag = parse_reference(reference)
    top = oci.top_descriptor(layout_dir)
    if top["mediaType"] == oci.MEDIA_INDEX:
        index_bytes = oci.blob_path(layout_dir, top["digest"]).read_bytes()
        for child in json.loads(index_bytes)["manifests"]:
            _push_image_manifest(host, repo, layout_dir, child, child["digest"])
        return _put_manifest(host, repo, tag, index_bytes, oci.MEDIA_INDEX)
    if top["mediaType"] == oci.MEDIA_MANIFEST:
        return _push_image_manifest(host, repo, layout_dir, top, tag)
    raise CosError(f"{layout_dir}/index.json: cannot push media type {top['mediaType']!r}")


def push_signature(ref_repo: str, digest: str, payload: bytes, signature: str) -> str:
    """Store a signature as cosign does; returns the signature manifest's digest.

    Like cosign, a new signature is appended to those already there (another key, a
    re-sign), and pushing the same one twice changes nothing.
    """
    host, repo, _ = parse_reference(repository_of(ref_repo))
    existing = signature_manifest(host, repo, digest)
    layers = list(existing["layers"]) if existing else []
    payload_digest = _push_blob(host, repo, payload)
    layer = {
        "mediaType": MEDIA_SIMPLESIGNING,
        "size": len(payload),
        "digest": payload_digest,
        "annotations": {SIGNATURE_ANNOTATION: signature},
    }
    if layer not in layers:
        layers.append(layer)
    # cosign's config: an empty image whose diff_ids are the (uncompressed) payloads.
    config = {
        "architecture": "",
        "os": "",
        "created": "0001-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = _push_blob(host, repo, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_MANIFEST,
        "config": {
            "mediaType": oci.MEDIA_CONFIG,
            "size": len(config_bytes),
            "digest": config_digest,
        },
        "layers": layers,
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    return _put_manifest(host, repo, signature_tag(digest), data, oci.MEDIA_MANIFEST)


# ---------------------------------------------------------------- server

_children: dict[int, subprocess.Popen] = {}  # started here: reaped on stop, no zombies


def _storage(storage_dir: Path | None) -> Path:
    return Path(storage_dir) if storage_dir else paths.build_dir() / "registry"


def _alive(pid: int, config: Path) -> bool:
    """pid is a live docker-registry serving this config (not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and str(config).encode() in cmdline


def _answers(address: str) -> bool:
    try:
        with opener.open(f"http://{address}/v2/", timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401  # a registry with auth answers with its challenge
    except (OSError, urllib.error.URLError):
        return False


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _running(storage: Path) -> tuple[int, int] | None:
    """(pid, port) of the registry started for this storage, if it still runs."""
    try:
        state = json.loads((storage / "registry.pid").read_text())
        pid, port = int(state["pid"]), int(state["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (pid, port) if _alive(pid, storage / "config.yml") else None


def _config(storage: Path, port: int, auth: dict | None) -> str:
    # JSON is valid YAML: safe for any path, and for the auth section as given.
    auth_section = f"auth: {json.dumps(auth)}\n" if auth else ""
    return (
        auth_section
        + f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {json.dumps(str(storage / "data"))}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: cos-local-registry
"""
    )


def start_registry(
    storage_dir: Path | None = None,
    port: int = 5000,
    log: Callable[[str], None] = print,
    auth: dict | None = None,
) -> str:
    """Run docker-registry on 127.0.0.1:port (reusing one already running with the same
    configuration); its address. `auth` is the configuration's `auth` section, e.g.
    {"htpasswd": {"realm": ..., "path": ...}} or {"token": {"realm": ..., ...}}."""
    storage = _storage(storage_dir)
    address = f"127.0.0.1:{port}"
    running = _running(storage)
    wanted = _config(storage, port, auth)
    if running:
        if running[1] != port:
            raise CosError(
                f"the registry for {storage} already runs on port {running[1]}, not {port}; "
                "stop it first"
            )
        if (storage / "config.yml").read_text() != wanted:
            log(f"registry: restarting pid {running[0]} with another auth configuration")
        elif _answers(address):
            log(f"registry: already running at {address} (pid {running[0]})")
            return address
        stop_registry(storage, log)  # reconfigured, or alive but deaf: start afresh
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise CosError(f"{REGISTRY_BINARY} not found: apt-get install docker-registry")
    if _port_taken(port):
        raise CosError(f"port {port} on 127.0.0.1 is taken by another program; choose another port")
    storage.mkdir(parents=True, exist_ok=True)
    config = storage / "config.yml"
    config.write_text(wanted)
    log_path = storage / "registry.log"
    with log_path.open("ab") as log_file:
        # Own session: the registry outlives this command and ignores its Ctrl-C.
        proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    (storage / "registry.pid").write_text(json.dumps({"pid": proc.pid, "port": port}))
    deadline = time.monotonic() + 15
    while not _answers(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_registry(storage, log=lambda _: None)
            tail = log_path.read_text(errors="replace")[-1500:]
            raise CosError(f"registry on {address} did not start; {log_path} ends with:\n{tail}")
        time.sleep(0.1)
    log(f"registry: serving {address} from {storage} (pid {proc.pid})")
    return address


def stop_registry(storage_dir: Path | None = None, log: Callable[[str], None] = print) -> bool:
    """Stop the registry started for storage_dir; False if none was running."""
    storage = _storage(storage_dir)
    pid_file = storage / "registry.pid"
    running = _running(storage)
    if running:
        pid = running[0]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid, storage / "config.yml") and time.monotonic() < deadline:
            if pid in _children:
                try:
                    _children[pid].wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.1)
        if _alive(pid, storage / "config.yml"):
            os.kill(pid, signal.SIGKILL)
        if pid in _children:
            _children.pop(pid).wait()
        log(f"registry: stopped pid {pid}")
    pid_file.unlink(missing_ok=True)
    return running is not None
