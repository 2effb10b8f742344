"""Pushing to and reading from registries that want credentials, against real
docker-registry processes: one with htpasswd (Basic) auth, one with token auth whose
tokens come from a Distribution token server on 127.0.0.1 (tests/unit/token_server.py).
Credentials come from where users keep them: the environment, a containers auth file, a
docker config, a credential helper. skopeo, which has its own client, checks what landed."""

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_registry import free_port, quiet
from token_server import TokenServer, User

from cos import registry as client
from toolkit import cosign, oci, publish, registry
from toolkit.errors import CosError

pytestmark = [
    pytest.mark.skipif(
        shutil.which(registry.REGISTRY_BINARY) is None,
        reason="docker-registry is not installed (apt-get install docker-registry)",
    ),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed"),
    pytest.mark.skipif(shutil.which("htpasswd") is None, reason="apt-get install apache2-utils"),
]

EPOCH = 1714564800


@pytest.fixture(autouse=True)
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test starts with no credentials anywhere and a client that has learnt nothing."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for name in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "COS_REGISTRY_USER",
                 "COS_REGISTRY_PASSWORD", "COS_REGISTRY_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    client.authenticator.grants.clear()
    return home


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> oci.OciImage:
    work = tmp_path_factory.mktemp("image")
    root = work / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\n")
    labels = {"org.opencontainers.image.version": "0.1.0", "io.cos.flavor": "debian-trixie"}
    return oci.build_oci_image(root, work / "amd64", arch_oci="amd64", labels=labels, epoch=EPOCH)


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("basic")
    htpasswd = folder / "htpasswd"
    for user, password, flag in (("alice", "s3cret", "-c"), ("bob", "hunter2", "")):
        subprocess.run(
            ["htpasswd", "-B", "-b", *([flag] if flag else []), str(htpasswd), user, password],
            check=True,
            capture_output=True,
        )
    auth = {"htpasswd": {"realm": "cos-test", "path": str(htpasswd)}}
    yield registry.start_registry(folder / "storage", port=free_port(), log=quiet, auth=auth)
    registry.stop_registry(folder / "storage", log=quiet)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    users = {
        "carol": User("pa55word", ["pull", "push"], refresh_token="carol-refresh-token"),
        "dave": User("readonly", ["pull"]),
    }
    server = TokenServer(tmp_path_factory.mktemp("tokens"), users)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer
) -> Iterator[str]:
    storage = tmp_path_factory.mktemp("token") / "storage"
    auth = token_server.registry_auth()
    yield registry.start_registry(storage, port=free_port(), log=quiet, auth=auth)
    registry.stop_registry(storage, log=quiet)


def skopeo_digest(reference: str, creds: str) -> str:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--creds", creds, f"docker://{reference}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["Digest"]


def write_auth_file(path: Path, auths: dict[str, dict], **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths, **extra}))
    return path


def push_error(image: oci.OciImage, reference: str) -> str:
    """The message of the CosError a push of image to reference fails with."""
    with pytest.raises(CosError) as e:
        registry.push_layout(image.layout_dir, reference)
    return str(e.value)


def basic(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


# ---------------------------------------------------------------- Basic (htpasswd)


def test_basic_push_with_credentials_from_the_environment(
    basic_registry: str, image: oci.OciImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COS_REGISTRY_USER", "alice")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "s3cret")
    reference = f"{basic_registry}/cos/env:0.1.0"
    assert registry.push_layout(image.layout_dir, reference) == image.manifest_digest
    assert skopeo_digest(reference, "alice:s3cret") == image.manifest_digest
    assert client.resolve_digest(reference) == image.manifest_digest


def test_basic_without_credentials_names_the_registry_and_where_it_looked(
    basic_registry: str, image: oci.OciImage, no_credentials: Path
) -> None:
    message = push_error(image, f"{basic_registry}/cos/none:0.1.0")
    assert f"registry {basic_registry} asks for a user and password" in message
    assert "none were found" in message
    assert "COS_REGISTRY_USER" in message
    assert str(no_credentials / ".docker" / "config.json") in message


def test_basic_wrong_password_is_refused_by_name(
    basic_registry: str, image: oci.OciImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_file = write_auth_file(tmp_path / "auth.json", {basic_registry: basic("alice", "nope")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    message = push_error(image, f"{basic_registry}/cos/wrong:0.1.0")
    assert f"registry {basic_registry} refused the credentials of user 'alice'" in message
    assert str(auth_file) in message


def test_containers_auth_file_longest_namespace_wins(
    basic_registry: str, image: oci.OciImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """containers-auth.json(5): an entry for host/namespace beats the one for the host."""
    auth_file = write_auth_file(
        tmp_path / "run" / "containers" / "auth.json",  # the default under XDG_RUNTIME_DIR
        {
            basic_registry: basic("alice", "wrong-for-cos"),
            f"{basic_registry}/cos": basic("bob", "hunter2"),
        },
    )
    reference = f"{basic_registry}/cos/namespaced:0.1.0"
    assert registry.push_layout(image.layout_dir, reference) == image.manifest_digest
    assert skopeo_digest(reference, "bob:hunter2") == image.manifest_digest
    message = push_error(image, f"{basic_registry}/other/name:0.1.0")
    assert f"refused the credentials of user 'alice' from {auth_file}" in message


def test_docker_config_url_key_and_credential_helper(
    basic_registry: str, image: oci.OciImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker's config.json: a URL-style key, then a credHelpers program for the host."""
    docker = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    write_auth_file(
        docker / "config.json", {f"http://{basic_registry}/v1/": basic("bob", "hunter2")}
    )
    reference = f"{basic_registry}/cos/docker:0.1.0"
    assert registry.push_layout(image.layout_dir, reference) == image.manifest_digest

    client.authenticator.grants.clear()
    helpers = tmp_path / "bin"
    helpers.mkdir()
    helper = helpers / "docker-credential-cos-test"
    # The helper protocol: the server name on stdin, JSON on stdout.
    helper.write_text(
        "#!/bin/sh\nread host\n"
        f'[ "$1" = get ] && [ "$host" = "{basic_registry}" ] || exit 1\n'
        'echo \'{"ServerURL":"\'$host\'","Username":"alice","Secret":"s3cret"}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helpers}:{os.environ['PATH']}")
    write_auth_file(docker / "config.json", {}, credHelpers={basic_registry: "cos-test"})
    reference = f"{basic_registry}/cos/helper:0.1.0"
    assert registry.push_layout(image.layout_dir, reference) == image.manifest_digest
    assert skopeo_digest(reference, "alice:s3cret") == image.manifest_digest


def test_broken_auth_file_is_named(
    basic_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "auth.json"
    broken.write_text("{not json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(broken))
    with pytest.raises(CosError, match=f"{broken}: cannot read registry credentials"):
        client.resolve_digest(f"{basic_registry}/cos/any:1")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(CosError, match="REGISTRY_AUTH_FILE names .*missing.json, which does not"):
        client.resolve_digest(f"{basic_registry}/cos/any:1")


# ---------------------------------------------------------------- Bearer (token server)


def test_bearer_push_signed_image_and_verify_signature(
    token_registry: str,
    token_server: TokenServer,
    image: oci.OciImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The release path: push and sign through the token flow, then read the signature
    back as a machine would."""
    monkeypatch.setenv("COS_REGISTRY_USER", "carol")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "pa55word")
    monkeypatch.setenv("COS_KEYS_DIR", str(tmp_path / "keys"))
    repository = f"{token_registry}/cos/signed"
    published = publish.push_signed(image.layout_dir, repository, "0.1.0")
    assert published.digest == image.manifest_digest
    assert skopeo_digest(published.reference, "carol:pa55word") == image.manifest_digest
    payload, signature = client.fetch_signature(repository, published.digest)
    _, public = cosign.ensure_keypair(tmp_path / "keys")
    cosign.verify(payload, signature, public, published.digest)
    # The push asked the token server, as carol, for pull and push on the repository.
    assert ("carol", ["repository:cos/signed:pull,push"]) in token_server.issued


def test_bearer_identity_token_from_auth_file(
    token_registry: str, image: oci.OciImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker login's identity token: exchanged by an OAuth2 refresh-token POST."""
    auth_file = write_auth_file(
        tmp_path / "auth.json", {token_registry: {"identitytoken": "carol-refresh-token"}}
    )
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    reference = f"{token_registry}/cos/identity:0.1.0"
    assert registry.push_layout(image.layout_dir, reference) == image.manifest_digest
    assert skopeo_digest(reference, "carol:pa55word") == image.manifest_digest


def test_bearer_wrong_password_names_the_token_server(
    token_registry: str,
    token_server: TokenServer,
    image: oci.OciImage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COS_REGISTRY_USER", "carol")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "guess")
    message = push_error(image, f"{token_registry}/cos/wrong:0.1.0")
    assert f"token server {token_server.realm} (for registry {token_registry})" in message
    assert "refused user 'carol' from COS_REGISTRY_USER/COS_REGISTRY_PASSWORD" in message
    assert "HTTP 401" in message


def test_bearer_without_credentials_and_with_too_few_rights(
    token_registry: str, image: oci.OciImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = f"{token_registry}/cos/rights:0.1.0"
    message = push_error(image, reference)
    assert f"registry {token_registry} refused the token" in message
    assert "anonymous access" in message
    assert "no credentials were found" in message

    client.authenticator.grants.clear()
    monkeypatch.setenv("COS_REGISTRY_USER", "dave")  # may pull, not push
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "readonly")
    message = push_error(image, reference)
    assert "issued to user 'dave'" in message
    assert "repository:cos/rights:pull,push" in message


def test_bearer_token_is_renewed_when_it_expires(
    token_registry: str,
    token_server: TokenServer,
    image: oci.OciImage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token past its expires_in is not sent: a fresh one is asked for first (the
    registry refuses expired tokens, and a long upload cannot be sent twice)."""
    monkeypatch.setenv("COS_REGISTRY_USER", "carol")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "pa55word")
    monkeypatch.setattr(token_server, "expires_in", 2)
    reference = f"{token_registry}/cos/expiring:0.1.0"
    registry.push_layout(image.layout_dir, reference)
    before = len(token_server.issued)
    grant = client.authenticator.grants[(token_registry, "cos/expiring")]
    grant.expires = 0  # as if the token's lifetime had passed
    assert client.resolve_digest(reference) == image.manifest_digest
    assert len(token_server.issued) == before + 1


def test_token_server_down_is_named(
    token_registry: str, token_server: TokenServer, tmp_path: Path
) -> None:
    dead = TokenServer(tmp_path, {})
    dead.stop()
    client.authenticator.grants.clear()
    challenge = f'Bearer realm="{dead.realm}",service="x",scope="repository:cos/a:pull"'
    with pytest.raises(CosError, match=f"token server {dead.realm} .* is not answering"):
        client.authenticator.answer(token_registry, "cos/a", challenge, None)


def test_push_access_is_checked_before_any_build(
    token_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`invoke push --registry` starts an upload and cancels it before building: a user
    who may only pull is stopped there, one who may push leaves nothing behind."""
    repository = f"{token_registry}/team/debian-trixie"
    monkeypatch.setenv("COS_REGISTRY_USER", "dave")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "readonly")
    with pytest.raises(
        CosError,
        match="issued to user 'dave' from .* for 'repository:team/debian-trixie:pull,push'",
    ):
        publish.check_push_access(repository, log=quiet)
    client.authenticator.grants.clear()
    monkeypatch.setenv("COS_REGISTRY_USER", "carol")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "pa55word")
    seen: list[str] = []
    publish.check_push_access(repository, log=seen.append)
    assert seen == [f"push: {repository} accepts uploads"]
    with pytest.raises(CosError, match="no such image"):
        client.resolve_digest(f"{repository}:1.0.0")


def test_a_challenged_upload_is_sent_again_whole(
    basic_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file body is read anew on each iteration: an upload's PUT that meets a challenge
    (here: the client forgot its grant after the POST) goes again with the whole file; a
    one-shot generator would send nothing the second time. Small: a registry closes the
    connection on a large body it answers 401 to, which is why _push_blob streams only
    after the upload's POST has the grant."""
    monkeypatch.setenv("COS_REGISTRY_USER", "alice")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "s3cret")
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1000))
    digest = oci.digest_of(blob.read_bytes())
    location = registry._start_upload(basic_registry, "cos/resent")
    client.authenticator.grants.clear()
    status, _, _ = client.call(
        "PUT",
        f"{location}&digest={digest}" if "?" in location else f"{location}?digest={digest}",
        basic_registry,
        body=registry._FileChunks(blob),
        headers={"Content-Type": "application/octet-stream", "Content-Length": "1000"},
    )
    assert status == 201
    assert (basic_registry, "cos/resent") in client.authenticator.grants  # it was challenged
    assert client.get_blob(basic_registry, "cos/resent", digest, "the blob") == blob.read_bytes()
