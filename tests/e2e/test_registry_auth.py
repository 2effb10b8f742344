"""A machine pulls from a registry that wants a password: `cos upgrade --dry-run` (resolve,
signature check, space check; nothing written) against a real docker-registry with
htpasswd auth, reached through the guest forward. The credentials come from where a user
puts them on the machine, the containers auth file under the persistent /root."""

import base64
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit import publish
from toolkit import registry as host_registry
from toolkit.build import image_folder
from vm.pytest_plugin import _failed, _Machines

pytestmark = pytest.mark.vm

GUEST_REGISTRY = "10.0.2.100:5000"  # the guest forward, as every machine sees it
AUTH_FILE = "/root/.config/containers/auth.json"
UPGRADE_TIMEOUT = 300  # KVM seconds, scaled by the harness


@pytest.fixture(scope="module")
def layout(vm_settings, vm_arch) -> Path:
    """The built image's OCI layout."""
    folder = image_folder(vm_settings.flavor, vm_arch) / "oci"
    if not folder.is_dir():
        pytest.fail(f"image not built: {folder}; run `invoke build`")
    return folder


@pytest.fixture(scope="module")
def password_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """docker-registry with htpasswd auth (alice / s3cret) on a free port."""
    from vm.ports import allocate_port

    folder = tmp_path_factory.mktemp("password-registry")
    htpasswd = folder / "htpasswd"
    subprocess.run(
        ["htpasswd", "-B", "-b", "-c", str(htpasswd), "alice", "s3cret"],
        check=True,
        capture_output=True,
    )
    lease = allocate_port()  # held while the registry runs, as the session registry's is
    auth = {"htpasswd": {"realm": "cos-e2e", "path": str(htpasswd)}}
    try:
        host_registry.start_registry(folder / "storage", lease.port, log=lambda _: None, auth=auth)
        yield lease.port
    finally:
        host_registry.stop_registry(folder / "storage", log=lambda _: None)
        lease.release()


@pytest.fixture
def machine(request, vm_host, vm_arch, password_registry) -> Iterator:
    """A machine whose guest forward leads to the password registry."""
    machines = _Machines(vm_host, vm_arch, password_registry)
    try:
        yield machines.make()
    finally:
        machines.finish(_failed(request), request.node.nodeid)


def auth_json(password: str) -> str:
    token = base64.b64encode(f"alice:{password}".encode()).decode()
    return json.dumps({"auths": {GUEST_REGISTRY: {"auth": token}}})


def test_upgrade_from_a_registry_that_wants_a_password(
    machine, layout: Path, vm_settings, password_registry: int, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COS_REGISTRY_USER", "alice")
    monkeypatch.setenv("COS_REGISTRY_PASSWORD", "s3cret")
    repository = publish.repository_for(f"127.0.0.1:{password_registry}", vm_settings.flavor)
    identity = publish.repository_for(GUEST_REGISTRY, vm_settings.flavor)
    published = publish.push_signed(layout, repository, "auth", identity=identity)
    reference = f"{identity}:auth"
    m = machine
    upgrade = f"cos upgrade --image {reference} --dry-run"

    out = m.fail(upgrade, UPGRADE_TIMEOUT)
    assert f"registry {GUEST_REGISTRY} asks for a user and password" in out, out
    assert "none were found; looked in COS_REGISTRY_USER/COS_REGISTRY_PASSWORD" in out, out

    m.succeed(
        f"mkdir -p {Path(AUTH_FILE).parent} && echo {shlex.quote(auth_json('wrong'))} > {AUTH_FILE}"
    )
    out = m.fail(upgrade, UPGRADE_TIMEOUT)
    assert f"refused the credentials of user 'alice' from {AUTH_FILE}" in out, out

    m.succeed(f"echo {shlex.quote(auth_json('s3cret'))} > {AUTH_FILE}")
    out = m.succeed(upgrade, UPGRADE_TIMEOUT)
    assert "would write slot 3" in out, out
    assert f"{identity}@{published.digest}" in out, out
