"""A maintained signature verifier beside our own: Debian 13's skopeo.

cos.signature is our own check of cosign's key-based signatures. Debian 12's skopeo (1.9)
has sigstore disabled by a Debian patch; trixie's (1.18) verifies them, given a
`sigstoreSigned` policy with the public key and a registries.d file that turns on
`use-sigstore-attachments`. So this module makes a small trixie tree holding skopeo
(`mmdebstrap --variant=apt trixie ... --include=skopeo`, under build/tools, made once)
and runs `skopeo copy` from it in a chroot: copy (not inspect) applies the policy, and
it also checks the manifest and every blob against their digests.

The tree needs nothing mounted: skopeo runs with the device nodes mmdebstrap created, the
host's network (a registry on 127.0.0.1 is reachable), and its own /tmp for the policy,
the key and the copied image.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cos.registry import base_url, parse_reference
from toolkit import paths
from toolkit.cache import remove_tree
from toolkit.errors import CosError
from toolkit.rootfs import DPKG_EXCLUDES, mirror
from toolkit.runner import run, system_env

SUITE = "trixie"
PACKAGE = "skopeo"
STAMP = "cos-tool.json"  # at the tree's top, written last: a tree without it is not used
TIMEOUT = 300  # seconds for one verification (it copies the whole image)
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
REGISTRIES_D = "default-docker:\n  use-sigstore-attachments: true\n"
_FATAL = re.compile(r'level=fatal msg="((?:[^"\\]|\\.)*)"')  # skopeo's refusal, quoted


@dataclass
class Verdict:
    accepted: bool
    message: str  # skopeo's reason for a refusal, or what it did when it accepted


def tool_tree() -> Path:
    return paths.build_dir() / "tools" / f"{PACKAGE}-{SUITE}"


def tool_version(tree: Path) -> str:
    """The Debian version of skopeo the finished tree holds, from its stamp."""
    return json.loads((tree / STAMP).read_text())["version"]


def is_complete(tree: Path) -> bool:
    try:
        stamp = json.loads((tree / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("suite") == SUITE and (tree / "usr/bin" / PACKAGE).is_file()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One maker at a time (pytest-xdist workers, two invoke runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_skopeo(tree: Path | None = None, log=print) -> Path:
    """The tool tree holding trixie's skopeo, made on first use and reused while it is
    complete. It is made under a temporary name and renamed into place once skopeo in it
    answers, so a build that failed or was killed is never used (the next call removes
    it, with any mounts mmdebstrap left in it, and starts again)."""
    tree = tree or tool_tree()
    if is_complete(tree):
        return tree
    if os.geteuid() != 0:
        raise CosError(
            f"making {tree} (Debian {SUITE}'s {PACKAGE}) needs root: mmdebstrap --mode=root "
            "and chroot; run as root"
        )
    with _locked(tree.with_name(f".{tree.name}.lock")):
        if is_complete(tree):  # another process made it while this one waited
            return tree
        partial = tree.with_name(f".{tree.name}.partial")
        remove_tree(partial)
        remove_tree(tree)  # present but incomplete: never used
        log(f"tools: making {tree} (Debian {SUITE} with {PACKAGE}; the only time)")
        try:
            run(
                [
                    "mmdebstrap",
                    "--mode=root",
                    "--variant=apt",
                    f"--include={PACKAGE}",
                    *[f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES],
                    SUITE,
                    str(partial),
                    *mirror(),
                ],
                what=f"mmdebstrap {SUITE} with {PACKAGE} (the verifier's tool tree)",
                log=log,
                env=system_env(),
            )
            version = run(
                ["chroot", str(partial), "dpkg-query", "-W", "-f", "${Version}", PACKAGE],
                what=f"asking the new tree for its {PACKAGE} version",
                env=_ENV,
            ).strip()
            run(
                ["chroot", str(partial), PACKAGE, "--version"],
                what=f"starting {PACKAGE} in {partial}",
                env=_ENV,
            )
            (partial / STAMP).write_text(
                json.dumps({"suite": SUITE, "package": PACKAGE, "version": version}) + "\n"
            )
            partial.rename(tree)
        except BaseException:
            remove_tree(partial)
            raise
    log(f"tools: {tree} holds {PACKAGE} {version}")
    return tree


def _policy(key_path: str) -> dict:
    """Only images signed by this key are taken. cosign's payload names the repository
    without a tag, which matchRepository accepts (the default, matchRepoDigestOrExact,
    wants a tag or digest in it); the payload's digest is always checked against the
    manifest."""
    signed = {
        "type": "sigstoreSigned",
        "keyPath": key_path,
        "signedIdentity": {"type": "matchRepository"},
    }
    return {"default": [{"type": "reject"}], "transports": {"docker": {"": [signed]}}}


def skopeo_verify(reference: str, public_key: Path, tree: Path | None = None) -> Verdict:
    """trixie's skopeo's verdict on the image `reference` ('host:port/repo@sha256:...' or
    ':tag') against public_key: `skopeo copy` under a policy that requires a sigstore
    signature by that key, to a throwaway OCI layout. A refusal (skopeo's fatal message)
    is a Verdict; a tree that cannot be made, or a skopeo that cannot run, is a CosError."""
    tree = ensure_skopeo(tree)
    if os.geteuid() != 0:
        raise CosError(f"running {PACKAGE} in {tree} needs root (chroot)")
    host, _, _ = parse_reference(reference)
    work = Path(tempfile.mkdtemp(prefix="cos-verify-", dir=tree / "tmp"))
    inside = f"/tmp/{work.name}"
    try:
        shutil.copyfile(public_key, work / "cosign.pub")
        (work / "policy.json").write_text(json.dumps(_policy(f"{inside}/cosign.pub")))
        (work / "registries.d").mkdir()
        (work / "registries.d/cos.yaml").write_text(REGISTRIES_D)
        command = [
            "chroot",
            str(tree),
            PACKAGE,
            "copy",
            "--quiet",
            f"--policy={inside}/policy.json",
            f"--registries.d={inside}/registries.d",
            "--remove-signatures",  # the OCI layout cannot store them; they were checked
            *(["--src-tls-verify=false"] if base_url(host).startswith("http:") else []),
            f"docker://{reference}",
            f"oci:{inside}/image",
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                errors="replace",
                env=_ENV,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CosError(f"{PACKAGE} copy of {reference} took over {TIMEOUT} s") from None
        output = result.stdout + result.stderr
        if result.returncode == 0:
            return Verdict(True, f"copied {reference}: signature and digests verified")
        refusal = _FATAL.findall(output)
        if not refusal:  # not a verdict: chroot or skopeo itself did not run
            raise CosError(
                f"{PACKAGE} in {tree} failed without a verdict (exit {result.returncode}): "
                + output.strip()[-1500:]
            )
        try:
            return Verdict(False, json.loads(f'"{refusal[-1]}"'))  # Go quoted it
        except ValueError:
            return Verdict(False, refusal[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
