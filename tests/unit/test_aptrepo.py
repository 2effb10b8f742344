"""Package tree -> .deb files -> signed apt repository, read back by the real apt-get."""

import hashlib
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from toolkit.aptrepo import write_repository
from toolkit.errors import CosError
from toolkit.gpgkey import SigningKey, ensure_key
from toolkit.packages import build_repository

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("gpg", "apt-get", "dpkg-deb")),
    reason="needs gpg, apt-get and dpkg-deb",
)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory) -> Path:
    """One signing key for the module: creating keys is the slow part."""
    keys = tmp_path_factory.mktemp("keys")
    ensure_key(keys, log=lambda line: None)
    return keys


def write_tree(tree: Path) -> Path:
    """cos-agent (any, depends on cos-base) and cos-base (all)."""
    for name, yaml_text, files in [
        (
            "cos-base",
            """\
            name: cos-base
            version: 1.0.0
            architecture: all
            description: Base files
            files: [{src: motd, dest: /etc/cos/motd}]
            """,
            {"motd": "hello\n"},
        ),
        (
            "cos-agent",
            """\
            name: cos-agent
            version: 0.3.0
            architecture: any
            description: |
              The cOS agent
              Runs in the guest.
            depends: [cos-base, "python3 (>= 3.11)"]
            files: [{src: cos, dest: /usr/bin/cos}]
            """,
            {"cos": "#!/bin/sh\necho cos\n"},
        ),
    ]:
        folder = tree / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.yaml").write_text(textwrap.dedent(yaml_text))
        for rel, content in files.items():
            (folder / rel).write_text(content)
    return tree


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def built(tmp_path, keys_dir):
    lines: list[str] = []
    result = build_repository(
        write_tree(tmp_path / "packages"), tmp_path / "out" / "repo", keys_dir, log=lines.append
    )
    return result, lines


def apt_get(repo: Path, keyring: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    """apt-get in a private apt root that knows only `repo`; nothing of the host's apt state."""
    for sub in (
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "etc/apt/trusted.gpg.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
        "download",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    sources = root / "etc/apt/sources.list"
    sources.write_text(f"deb [signed-by={keyring}] file:{repo} cos main\n")
    # APT_CONFIG is read before everything else, so the host's apt.conf.d is never consulted.
    (root / "apt.conf").write_text(f'Dir "{root}/";\n')
    options = {
        "Dir": f"{root}/",
        "Dir::State::status": f"{root}/var/lib/dpkg/status",
        "Dir::Etc::sourcelist": str(sources),
        "Dir::Etc::sourceparts": f"{root}/etc/apt/sources.list.d",
        "APT::Architecture": "amd64",
        "APT::Architectures": "amd64",
        "Debug::NoLocking": "1",
        "APT::Sandbox::User": "root",  # the _apt user cannot read pytest's 0700 tmp dirs
    }
    cmd = ["apt-get", "-q"] + [arg for k, v in options.items() for arg in ("-o", f"{k}={v}")]
    return subprocess.run(
        [*cmd, *args],
        cwd=root / "download",
        capture_output=True,
        text=True,
        check=False,
        env={"APT_CONFIG": str(root / "apt.conf"), "PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )


def test_layout_and_release(built):
    result, _ = built
    repo = result.repo_dir
    assert result.keyring == repo / "cos-archive-keyring.gpg" and result.keyring.is_file()
    assert (
        (repo / "cos-archive-keyring.asc")
        .read_text()
        .startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    )
    dists = repo / "dists" / "cos"
    release = (dists / "Release").read_text()
    for line in (
        "Origin: cOS",
        "Suite: cos",
        "Codename: cos",
        "Architectures: amd64 arm64",
        "Components: main",
        "Date: Mon, 01 Jan 2024 00:00:00 UTC",
    ):
        assert line in release.splitlines()
    assert "MD5Sum:" in release and "SHA256:" in release
    # Every index named in Release is there with the stated size and hash.
    sha_section = release.split("SHA256:\n")[1]
    listed = [line.split() for line in sha_section.splitlines()]
    assert len(listed) == 4
    for digest, size, name in listed:
        data = (dists / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), int(size)) == (digest, len(data))
    assert (dists / "InRelease").read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    assert (dists / "Release.gpg").read_text().startswith("-----BEGIN PGP SIGNATURE-----")

    for arch in ("amd64", "arm64"):
        packages = (dists / f"main/binary-{arch}/Packages").read_text()
        assert "Package: cos-base\nVersion: 1.0.0\nArchitecture: all\n" in packages
        assert f"Filename: pool/main/c/cos-agent/cos-agent_0.3.0_{arch}.deb" in packages
        other = "arm64" if arch == "amd64" else "amd64"
        assert f"cos-agent_0.3.0_{other}.deb" not in packages
    assert not list(repo.parent.glob(".repo.*"))  # no temp folders left


def test_second_build_changes_nothing(built, keys_dir, tmp_path):
    first, lines = built
    assert sorted(first.built) == ["cos-agent", "cos-base"] and first.reused == []
    assert any(line.startswith("wrote repository") for line in lines)
    before = snapshot(first.repo_dir)
    debs_before = snapshot(tmp_path / "out" / "debs")

    lines = []
    second = build_repository(
        tmp_path / "packages", tmp_path / "out" / "repo", keys_dir, log=lines.append
    )
    assert second.built == [] and sorted(second.reused) == ["cos-agent", "cos-base"]
    assert "nothing to rebuild: 2 packages up to date" in lines
    assert second.inputs_hash == first.inputs_hash and not second.index_written
    assert snapshot(second.repo_dir) == before  # same bytes, not even rewritten
    assert snapshot(tmp_path / "out" / "debs") == debs_before


def test_debs_are_reproducible_across_build_dirs(built, keys_dir, tmp_path):
    first, _ = built
    other = build_repository(
        tmp_path / "packages", tmp_path / "other" / "repo", keys_dir, log=lambda line: None
    )
    for deb in (tmp_path / "out" / "debs").glob("*.deb"):
        assert deb.read_bytes() == (tmp_path / "other" / "debs" / deb.name).read_bytes()
    # Same content and key: same hash, although the signatures carry other timestamps.
    assert other.inputs_hash == first.inputs_hash


def test_changed_package_rebuilds_only_itself(built, keys_dir, tmp_path):
    first, _ = built
    (tmp_path / "packages" / "cos-base" / "motd").write_text("changed\n")
    second = build_repository(
        tmp_path / "packages", tmp_path / "out" / "repo", keys_dir, log=lambda line: None
    )
    assert second.built == ["cos-base"] and second.reused == ["cos-agent"]
    assert second.index_written and second.inputs_hash != first.inputs_hash

    shutil.rmtree(tmp_path / "packages" / "cos-agent")
    (tmp_path / "packages" / "cos-base" / "package.yaml").write_text(
        "name: cos-base\nversion: 1.0.1\narchitecture: all\ndescription: Base\n"
    )
    third = build_repository(
        tmp_path / "packages", tmp_path / "out" / "repo", keys_dir, log=lambda line: None
    )
    assert third.built == ["cos-base"]
    assert [p.name for p in (tmp_path / "out" / "debs").glob("*.deb")] == ["cos-base_1.0.1_all.deb"]
    assert sorted(p.name for p in third.repo_dir.rglob("*.deb")) == ["cos-base_1.0.1_all.deb"]


def test_apt_updates_and_downloads(built, tmp_path):
    result, _ = built
    root = tmp_path / "aptroot"
    update = apt_get(result.repo_dir, result.keyring, root, "update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W:" not in update.stdout + update.stderr
    download = apt_get(result.repo_dir, result.keyring, root, "download", "cos-agent", "cos-base")
    assert download.returncode == 0, download.stdout + download.stderr
    assert sorted(p.name for p in (root / "download").iterdir()) == [
        "cos-agent_0.3.0_amd64.deb",
        "cos-base_1.0.0_all.deb",
    ]
    pool = result.repo_dir / "pool/main/c/cos-agent/cos-agent_0.3.0_amd64.deb"
    assert (root / "download" / "cos-agent_0.3.0_amd64.deb").read_bytes() == pool.read_bytes()


def test_apt_uses_release_gpg_without_inrelease(built, tmp_path):
    result, _ = built
    repo = tmp_path / "copy"
    shutil.copytree(result.repo_dir, repo)
    (repo / "dists/cos/InRelease").unlink()
    update = apt_get(repo, result.keyring, tmp_path / "aptroot", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W:" not in update.stdout + update.stderr


def test_apt_rejects_tampered_inrelease(built, tmp_path):
    result, _ = built
    repo = tmp_path / "tampered"
    shutil.copytree(result.repo_dir, repo)
    inrelease = repo / "dists/cos/InRelease"
    text = inrelease.read_text()
    line = next(line for line in text.splitlines() if line.endswith("binary-amd64/Packages"))
    digest = line.split()[0]
    forged = digest[:-1] + ("0" if digest[-1] != "0" else "1")  # one byte changed
    inrelease.write_text(text.replace(line, line.replace(digest, forged), 1))

    root = tmp_path / "aptroot"
    update = apt_get(repo, result.keyring, root, "update")
    output = update.stdout + update.stderr
    assert update.returncode != 0, output
    assert "BADSIG" in output or "NO_PUBKEY" in output or "not signed" in output
    download = apt_get(repo, result.keyring, root, "download", "cos-agent")
    assert download.returncode != 0
    assert not list((root / "download").iterdir())


def test_failed_publish_leaves_old_repository(built, keys_dir, tmp_path):
    result, _ = built
    before = snapshot(result.repo_dir)
    (tmp_path / "out" / "debs" / "cos-base_1.0.0_all.deb").write_bytes(b"changed, not a deb")
    key = ensure_key(keys_dir)
    debs = sorted((tmp_path / "out" / "debs").glob("*.deb"))
    with pytest.raises(CosError, match="not a .deb"):
        write_repository(debs, result.repo_dir, key)
    # A public key without its secret half: signing fails once the new tree is half made.
    public_only = tmp_path / "public-only"
    shutil.copytree(key.home, public_only)
    shutil.rmtree(public_only / "private-keys-v1.d")
    debs = [d for d in debs if "cos-base" not in d.name]
    with pytest.raises(CosError, match="clearsign.*No secret key"):
        write_repository(debs, result.repo_dir, SigningKey(public_only, key.fingerprint))
    assert snapshot(result.repo_dir) == before
    assert sorted(p.name for p in result.repo_dir.parent.iterdir()) == ["debs", "repo"]


def test_bad_tree_leaves_repository_alone(built, keys_dir, tmp_path):
    result, _ = built
    before = snapshot(result.repo_dir)
    (tmp_path / "packages" / "cos-base" / "package.yaml").write_text("name: [broken\n")
    with pytest.raises(CosError, match="malformed YAML"):
        build_repository(tmp_path / "packages", result.repo_dir, keys_dir, log=lambda line: None)
    assert snapshot(result.repo_dir) == before


def test_empty_tree_is_an_error(tmp_path, keys_dir):
    (tmp_path / "packages").mkdir()
    with pytest.raises(CosError, match="no packages"):
        build_repository(tmp_path / "packages", tmp_path / "repo", keys_dir)
