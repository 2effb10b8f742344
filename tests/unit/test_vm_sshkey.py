"""The harness's SSH key: made once per build folder, private, loadable by paramiko."""

from pathlib import Path

import paramiko
import pytest

from vm.sshkey import harness_key


@pytest.fixture(autouse=True)
def _build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))


def test_harness_key_made_once_and_loadable() -> None:
    key = harness_key()
    assert key.public.startswith("ssh-ed25519 ")
    assert oct(key.private.stat().st_mode & 0o777) == "0o600"
    assert harness_key() == key
    loaded = paramiko.Ed25519Key.from_private_key_file(str(key.private))
    assert key.public.split()[1] == loaded.get_base64()
