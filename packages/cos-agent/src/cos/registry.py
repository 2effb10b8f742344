"""Reading from an OCI Distribution registry over its v2 HTTP API: references, manifests
checked against their digest, blobs checked while they stream, and the cosign signatures
stored beside an image (a manifest tagged `sha256-<hex>.sig`). The agent pulls with it;
the host toolkit's push and checks use the same code."""

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

from cos import oci
from cos.auth import Authenticator
from cos.errors import CosError
from cos.signature import repository_of

MEDIA_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CHUNK = 1 << 20
TIMEOUT = 60  # seconds per socket operation, not per request
# Never send registry traffic through a proxy from the environment.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# What each registry asked for and the tokens it accepted, for this process's requests.
authenticator = Authenticator(opener, TIMEOUT)
_REPOSITORY_IN_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")


def parse_reference(reference: str) -> tuple[str, str, str]:
    """'host:port/repo/name:tag' or '...@sha256:..' -> (host, repo, tag or digest)."""
    name, at, digest = reference.partition("@")
    host, slash, rest = name.partition("/")
    if not slash or not rest or not ("." in host or ":" in host or host == "localhost"):
        raise CosError(
            f"image reference {reference!r} needs a registry host, e.g. 127.0.0.1:5000/cos/name:tag"
        )
    repo = repository_of(name)[len(host) + 1 :]
    tag = name[len(host) + 1 + len(repo) + 1 :]
    if at:
        return host, repo, digest
    return host, repo, tag or "latest"


def base_url(host: str) -> str:
    # Plain HTTP for loopback and for the host's registry as a guest reaches it (QEMU's
    # user network forward at 10.0.2.100); anything else is expected to have TLS.
    local = host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]", "10.0.2.100")
    return f"{'http' if local else 'https'}://{host}"


def _describe_http_error(e: urllib.error.HTTPError) -> str:
    detail = e.read()[:500].decode(errors="replace").strip()
    try:
        detail = json.loads(detail)["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return f"HTTP {e.code} {e.reason}: {detail}"


def _repository_in(url: str) -> str:
    match = _REPOSITORY_IN_PATH.match(urllib.parse.urlsplit(url).path)
    return match[1] if match else ""


def open_url(method: str, url: str, host: str, *, body=None, headers=None, missing_ok=False):
    """An open response (the caller reads and closes it), or None for a 404 when
    missing_ok. A 401 is answered as its challenge asks (cos.auth) and the request sent
    again; a body must therefore be bytes or re-iterable. Any other failure is a CosError
    naming the request."""
    repository = _repository_in(url)
    for _ in range(3):  # anonymous, then a token for the scope, then one for a wider scope
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        sent = authenticator.header(host, repository)
        if sent:
            # Not passed on by a redirect: blob storage elsewhere has its own signed URL.
            request.add_unredirected_header("Authorization", sent)
        try:
            return opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            if e.code == 401:
                challenge = e.headers.get("WWW-Authenticate")
                e.close()
                authenticator.answer(host, repository, challenge, sent)
                continue
            if missing_ok and e.code == 404:
                return None
            raise CosError(f"{method} {url}: {_describe_http_error(e)}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            raise CosError(f"registry at {host} is not answering: {e}") from None
    raise CosError(f"{method} {url}: registry {host} keeps answering 401 Unauthorized")


def call(method: str, url: str, host: str, *, body=None, headers=None, missing_ok=False):
    """One whole request: (status, headers, body); status 404 only when missing_ok."""
    response = open_url(method, url, host, body=body, headers=headers, missing_ok=missing_ok)
    if response is None:
        return 404, {}, b""
    with response:
        try:
            return response.status, dict(response.headers.items()), response.read()
        except (ConnectionError, TimeoutError, OSError) as e:
            raise CosError(f"{method} {url}: connection lost: {e}") from None


def header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def get_manifest(reference: str) -> tuple[str, bytes, str]:
    """(media type, raw bytes, digest) of a manifest or index; CosError if absent or, when
    asked for by digest, if the content does not have that digest."""
    host, repo, ref = parse_reference(reference)
    url = f"{base_url(host)}/v2/{repo}/manifests/{ref}"
    status, headers, data = call(
        "GET", url, host, headers={"Accept": ", ".join(oci.MANIFEST_TYPES)}, missing_ok=True
    )
    if status == 404:
        raise CosError(f"{reference}: no such image in the registry")
    digest = oci.digest_of(data)
    if ref.startswith("sha256:") and digest != ref:
        raise CosError(f"{reference}: tampered manifest: its content has digest {digest}")
    media_type = (header(headers, "Content-Type") or "").split(";")[0]
    return media_type or oci.load_json(data, reference).get("mediaType", ""), data, digest


def resolve_digest(reference: str) -> str:
    """The manifest digest a tag points at now (resolve once, then pull by digest)."""
    host, repo, ref = parse_reference(reference)
    if ref.startswith("sha256:"):
        return ref
    url = f"{base_url(host)}/v2/{repo}/manifests/{ref}"
    status, headers, _ = call(
        "HEAD", url, host, headers={"Accept": ", ".join(oci.MANIFEST_TYPES)}, missing_ok=True
    )
    if status == 404:
        raise CosError(f"{reference}: no such image in the registry")
    return header(headers, "Docker-Content-Digest") or get_manifest(reference)[2]


def blob_chunks(host: str, repo: str, digest: str, what: str) -> Iterator[bytes]:
    """A blob's bytes as they arrive. The last chunk is given only once the whole blob has
    its digest: a mismatch or a lost connection is a CosError naming `what`, raised before
    the caller sees the end, so nothing built from a bad blob can be finished."""
    url = f"{base_url(host)}/v2/{repo}/blobs/{digest}"
    response = open_url("GET", url, host)
    sha = hashlib.sha256()
    with response:
        pending = b""
        while True:
            try:
                chunk = response.read(CHUNK)
            except (ConnectionError, TimeoutError, OSError) as e:
                raise CosError(f"{what} ({digest}): download broke off: {e}") from None
            if not chunk:
                break
            sha.update(chunk)
            if pending:
                yield pending
            pending = chunk
        if oci.hash_digest(sha) != digest:
            raise CosError(
                f"{what}: tampered or corrupt: its content has digest {oci.hash_digest(sha)}, "
                f"not {digest}"
            )
        if pending:
            yield pending


def get_blob(host: str, repo: str, digest: str, what: str) -> bytes:
    return b"".join(blob_chunks(host, repo, digest, what))


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def signature_manifest(host: str, repo: str, digest: str) -> dict | None:
    try:
        _, data, _ = get_manifest(f"{host}/{repo}:{signature_tag(digest)}")
    except CosError as e:
        if "no such image" in str(e):
            return None
        raise
    return oci.load_json(data, f"{host}/{repo}:{signature_tag(digest)}")


def fetch_signatures(repo: str, digest: str) -> list[tuple[bytes, str]]:
    """Every (payload, signature) stored for the image digest in repo, oldest first."""
    host, name, _ = parse_reference(repository_of(repo))
    manifest = signature_manifest(host, name, digest)
    if manifest is None:
        raise CosError(f"unsigned: {repository_of(repo)}@{digest} has no signature")
    found = []
    for layer in manifest.get("layers", []):
        signature = layer.get("annotations", {}).get(SIGNATURE_ANNOTATION)
        if layer.get("mediaType") != MEDIA_SIMPLESIGNING or signature is None:
            continue
        payload = get_blob(host, name, layer["digest"], "signature payload")
        found.append((payload, signature))
    if not found:
        raise CosError(f"unsigned: {repository_of(repo)}@{digest}: signature manifest is empty")
    return found


def fetch_signature(repo: str, digest: str) -> tuple[bytes, str]:
    """The newest (payload, signature) stored for the image digest in repo."""
    return fetch_signatures(repo, digest)[-1]
