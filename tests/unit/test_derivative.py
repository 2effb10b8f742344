"""Containerfile flavors: FROM resolved to the parent's built image, bad Containerfiles and
flavor.yaml files named with file and line, buildah's real build of a layer on a small
base image (and a failing RUN reported with its line and output), and the check that a
derivative still holds what a cOS system needs."""

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from toolkit import buildah, containerfile, derivative, fromimage, oci
from toolkit.arch import get_arch, host_arch
from toolkit.errors import CosError
from toolkit.flavors import load_flavor

ARCHIVE = Path("/build/images/debian-trixie/x86_64/image.oci.tar")
FLAVORS = ["debian-bookworm", "debian-trixie"]
PARENT = """\
name: base
description: a parent
suite: trixie
version: 1.0.0
architectures: [x86_64, aarch64]
kernel: {x86_64: linux-image-cloud-amd64, aarch64: linux-image-cloud-arm64}
packages: [cos-system]
"""
CHILD = """\
name: child
description: a derivative
parent: base
version: 2.0.0
"""


def resolve(text: str, path: Path = Path("images/child/Containerfile")) -> str:
    parsed = containerfile.parse(path, text)
    return containerfile.resolve(parsed, "debian-trixie", "0.1.0", FLAVORS, ARCHIVE)


def error_of(text: str) -> str:
    with pytest.raises(CosError) as raised:
        resolve(text)
    return str(raised.value)


def test_from_names_the_parent_built_image_and_lines_stay_where_they_were():
    text = (
        "# comment\n"
        "FROM cos/debian-trixie\n"
        "\n"
        "RUN apt-get update \\\n"
        "  # a comment inside\n"
        " && apt-get install -y nginx\n"
        "COPY page /var/www/\n"
    )
    resolved = resolve(text).splitlines()
    assert resolved[1] == f"FROM oci-archive:{ARCHIVE}"
    assert resolved[3:] == text.splitlines()[3:]
    parsed = containerfile.parse(Path("Containerfile"), text)
    assert [(i.line, i.keyword) for i in parsed.instructions] == [
        (2, "FROM"),
        (4, "RUN"),
        (7, "COPY"),
    ]
    run = parsed.instructions[1]
    assert run.arguments == "apt-get update  && apt-get install -y nginx"
    # buildah prints the step with the continuation joined; it maps back to line 4
    step = "RUN apt-get update && apt-get install -y nginx"
    assert parsed.instruction_at_step(step) == run


def test_tags_aliases_and_earlier_stages():
    text = (
        "FROM cos/debian-trixie:0.1.0 AS build\n"
        "RUN echo built > /out\n"
        "FROM \\\n  cos/debian-trixie:latest\n"
        "COPY --from=build /out /out\n"
        "COPY --from=0 /out /again\n"
        "FROM build\n"
    )
    lines = resolve(text).splitlines()
    assert lines[0] == f"FROM oci-archive:{ARCHIVE} AS build"
    assert lines[2:4] == [f"FROM oci-archive:{ARCHIVE}", ""]
    assert lines[6] == "FROM build"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "FROM debian:trixie\nRUN true\n",
            r"Containerfile:1: FROM debian:trixie is not a cOS flavor image; a derivative "
            r"starts FROM cos/<flavor> \(flavors: debian-bookworm, debian-trixie\)",
        ),
        ("FROM cos/debian-sid\n", r":1: FROM cos/debian-sid: no flavor 'debian-sid'"),
        (
            "\nFROM cos/debian-bookworm\n",
            r":2: FROM cos/debian-bookworm: this flavor builds on debian-trixie",
        ),
        ("FROM cos/debian-trixie:9.9\n", r":1: .*version 0\.1\.0; name no tag, latest or 0\.1\.0"),
        ("FROM --platform=linux/arm64 cos/debian-trixie\n", r":1: FROM --platform=linux/arm64"),
        ("FROM cos/debian-trixie\nCOPY --from=nginx:latest /a /b\n", r":2: COPY --from=nginx"),
        ("ARG BASE=cos/debian-trixie\nFROM $BASE\n", r":2: FROM \$BASE: name the flavor"),
        ("RUN true\n", r"Containerfile:1: RUN: the first instruction must be FROM"),
        ("# nothing\n\n", r"Containerfile: no instructions"),
        ("FROM cos/debian-trixie AS\n", r":1: FROM cos/debian-trixie AS: expected FROM IMAGE"),
    ],
)
def test_bad_containerfiles_are_refused_with_file_and_line(text, message):
    import re

    error = error_of(text)
    assert "images/child/Containerfile" in error
    assert re.search(message, error), error


def test_a_containerfile_flavor_needs_a_parent_and_takes_only_its_fields(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base/flavor.yaml").write_text(PARENT)
    (tmp_path / "child").mkdir()
    (tmp_path / "child/Containerfile").write_text("FROM cos/base\n")
    (tmp_path / "child/cloud-config.yaml").write_text("name: copied by the Containerfile\n")
    (tmp_path / "child/flavor.yaml").write_text(CHILD)
    child = load_flavor("child", tmp_path)
    assert child.containerfile == tmp_path / "child/Containerfile"
    assert child.parent == "base" and child.version == "2.0.0"
    assert child.architectures == ["x86_64", "aarch64"] and child.suite == "trixie"
    assert child.cloud_configs == [] and child.folder == tmp_path / "child"

    (tmp_path / "child/flavor.yaml").write_text(CHILD.replace("parent: base\n", ""))
    with pytest.raises(CosError, match=r"child/flavor.yaml: field 'parent': is required beside"):
        load_flavor("child", tmp_path)
    (tmp_path / "child/flavor.yaml").write_text(CHILD + "packages: [nginx]\n")
    with pytest.raises(CosError, match=r"child/flavor.yaml: field 'packages': is not taken beside"):
        load_flavor("child", tmp_path)
    (tmp_path / "base/flavor.yaml").write_text(PARENT.replace(", aarch64]", "]"))
    (tmp_path / "child/flavor.yaml").write_text(CHILD + "architectures: [aarch64]\n")
    with pytest.raises(CosError, match=r"architectures\[0\]'?: aarch64: the parent base has no"):
        load_flavor("child", tmp_path)


def test_the_example_derivative_resolves_to_its_parent():
    flavor = load_flavor("web-appliance")
    assert flavor.containerfile is not None and flavor.parent == "debian-trixie"
    parent = load_flavor(flavor.parent)
    parsed = containerfile.parse(flavor.containerfile)
    text = containerfile.resolve(parsed, parent.name, parent.version, FLAVORS, ARCHIVE)
    assert f"FROM oci-archive:{ARCHIVE}" in text.splitlines()
    assert any(i.keyword == "RUN" and "nginx" in i.arguments for i in parsed.instructions)


def system_tree(root: Path, arch: str, kernels=("6.1.0-1",)) -> Path:
    """A tree holding what check_system looks for, as dpkg would have installed it."""
    packages = ["cos-agent", "cos-initramfs", "cos-grub", get_arch(arch).grub_efi_package]
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "\n".join(f"Package: {p}\nStatus: install ok installed\n" for p in packages)
    )
    for _what, _package, path in derivative.REQUIRED:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    for version in kernels:
        (root / f"usr/lib/modules/{version}").mkdir(parents=True)
        (root / "boot").mkdir(exist_ok=True)
        (root / f"boot/vmlinuz-{version}").write_text("kernel")
    return root


def test_a_derivative_without_the_agent_or_a_kernel_is_refused(tmp_path):
    arch = get_arch("x86_64")
    root = system_tree(tmp_path / "ok", "x86_64")
    derivative.check_system(root, "images/x/Containerfile", arch)

    no_agent = system_tree(tmp_path / "no-agent", "x86_64")
    status = no_agent / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("Package: cos-agent\n", "Package: other\n"))
    (no_agent / "usr/bin/cos").unlink()
    with pytest.raises(CosError) as raised:
        derivative.check_system(no_agent, "images/x/Containerfile", arch)
    assert str(raised.value) == (
        "images/x/Containerfile: the image lacks what a cOS system needs: "
        "the agent (package cos-agent, /usr/bin/cos)"
    )

    no_kernel = system_tree(tmp_path / "no-kernel", "x86_64", kernels=())
    (no_kernel / "usr/lib/modules/6.1.0-1").mkdir(parents=True)  # modules left, no image
    with pytest.raises(CosError, match=r"Containerfile: the image lacks .*: a kernel \(/boot/"):
        derivative.check_system(no_kernel, "images/x/Containerfile", arch)

    two = system_tree(tmp_path / "two", "x86_64", kernels=("6.1.0-1", "6.12.0-2"))
    with pytest.raises(CosError, match=r"has 2 kernels \(6.1.0-1, 6.12.0-2\)"):
        derivative.check_system(two, "images/x/Containerfile", arch)


def layer_folder(folder: Path, layers: list[tuple[str, dict[str, bytes | None]]]) -> Path:
    """A containerfile stage's output: per layer (origin, {path: content, or None for a
    whiteout}) as gzip tar blobs and ADDED_INFO."""
    import gzip
    import hashlib
    import io

    folder.mkdir()
    added = []
    for origin, entries in layers:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, content in entries.items():
                head, _, name = path.rpartition("/")
                info = tarfile.TarInfo(path if content is not None else f"{head}/.wh.{name}")
                info.size = len(content or b"")
                tar.addfile(info, io.BytesIO(content or b""))
        blob = gzip.compress(raw.getvalue())
        name = hashlib.sha256(blob).hexdigest()
        (folder / name).write_bytes(blob)
        diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
        added.append({"blob": name, "diff_id": diff_id, "created_by": "", "origin": origin})
    info = {"config": {}, "layers": added, "steps": []}
    (folder / buildah.ADDED_INFO).write_text(json.dumps(info))
    return folder


def test_what_the_derivative_lacks_is_blamed_on_the_line_that_took_it_away(tmp_path):
    """Checked after each layer: a part removed and put back later is no problem; what is
    missing at the end names the instruction (file:line) whose layer removed it."""
    parent = system_tree(tmp_path / "parent", "x86_64")
    added = layer_folder(
        tmp_path / "added",
        [
            ("CF:2: RUN purge cos-agent", {"usr/bin/cos": None}),
            ("CF:3: RUN install cos-agent", {"usr/bin/cos": b"again"}),
            ("CF:5: RUN rm the kernel", {"boot/vmlinuz-6.1.0-1": None}),
            ("CF:6: COPY page /srv/page", {"srv/page": b"hello"}),
            ("CF:8: RUN purge cos-grub", {"usr/share/cos/grub/grub.cfg": None}),
        ],
    )
    flavor = derived_flavor(tmp_path, "RUN true\n")
    with pytest.raises(CosError) as raised:
        derivative.make_derived_rootfs(
            flavor, get_arch("x86_64"), parent, added, tmp_path / "key", "test", 1700000000,
            tmp_path / "rootfs", tmp_path / "finish.tar", log=lambda _: None,
        )  # fmt: skip
    assert str(raised.value) == (
        "CF:5: RUN rm the kernel: the image lacks what a cOS system needs: a kernel "
        "(/boot/vmlinuz-VERSION with /usr/lib/modules/VERSION)\n"
        "CF:8: RUN purge cos-grub: the image lacks what a cOS system needs: GRUB's menu "
        "(package cos-grub, /usr/share/cos/grub/grub.cfg)"
    )


def test_the_finishing_layer_holds_what_changed_and_whiteouts_for_what_went(tmp_path):
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("a machine's key")
    (root / "etc/keep").write_text("same")
    (root / "old").mkdir()
    (root / "old/inside").write_text("x")
    before = derivative.snapshot(root)
    (root / "etc/ssh/ssh_host_ed25519_key").unlink()
    shutil.rmtree(root / "old")
    (root / "etc/new").write_text("new")
    changed, removed = derivative.changes(before, derivative.snapshot(root))
    # etc/ssh changed too: a folder's mtime moves when an entry goes
    assert changed == ["etc", "etc/new", "etc/ssh"]
    assert removed == ["etc/ssh/ssh_host_ed25519_key", "old"]
    layer = tmp_path / "layer.tar"
    derivative.write_layer_tar(root, changed, removed, layer, epoch=1700000000)
    with tarfile.open(layer) as tar:
        assert tar.getnames() == [
            "etc", "etc/new", "etc/ssh", "etc/ssh/.wh.ssh_host_ed25519_key", ".wh.old",
        ]  # fmt: skip


def test_finishing_that_changed_nothing_adds_no_layer(tmp_path):
    """An image finished already (`invoke build --image` of a built image) is its own
    layers as they are; a finishing layer is added only when it holds something."""
    base = tiny_image(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").mkdir()
    for name, changed in (("same", []), ("more", ["etc"])):
        finish = tmp_path / f"{name}.tar"
        derivative.write_layer_tar(root, changed, [], finish, epoch=1700000000)
        out = tmp_path / name
        out.mkdir()
        derivative.write_derived_oci(
            base / "oci", [], None, finish, out / "oci", out / "image.oci.tar",
            labels={}, epoch=1700000000, log=lambda _: None,
        )  # fmt: skip
        layers = oci.read_blob_json(out / "oci", oci.top_descriptor(out / "oci")["digest"])
        below = oci.read_blob_json(base / "oci", oci.top_descriptor(base / "oci")["digest"])
        assert len(layers["layers"]) == len(below["layers"]) + len(changed)


# buildah for real, on a base image made of the host's dash and its libraries.


def tiny_image(tmp_path: Path, labels: dict[str, str] | None = None) -> Path:
    root = tmp_path / "tiny-root"
    for path in ["/usr/bin/dash", *libraries("/usr/bin/dash")]:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/bin/sh").symlink_to("dash")
    for folder in ("tmp", "etc", "proc", "dev", "sys"):
        (root / folder).mkdir(exist_ok=True)
    out = tmp_path / "base"
    arch = get_arch(host_arch())
    oci.build_oci_image(
        root, out, arch_oci=arch.oci, labels=labels or {}, epoch=1700000000, log=print
    )
    return out


def libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            found.append(os.path.realpath(path))
            if os.path.realpath(path) != path:
                found.append(path)
    return found


def derived_flavor(tmp_path: Path, steps: str):
    images = tmp_path / "images"
    (images / "base").mkdir(parents=True)
    (images / "base/flavor.yaml").write_text(PARENT)
    (images / "child").mkdir()
    (images / "child/flavor.yaml").write_text(CHILD)
    (images / "child/Containerfile").write_text(f"# a test derivative\nFROM cos/base\n{steps}")
    return load_flavor("child", images)


def needs(tool: str):
    return pytest.mark.skipif(
        shutil.which(tool) is None or os.geteuid() != 0, reason=f"needs {tool} and root"
    )


needs_buildah = needs("buildah")


@needs_buildah
def test_buildah_adds_a_layer_on_the_parent_layers(tmp_path):
    base = tiny_image(tmp_path)
    flavor = derived_flavor(tmp_path, "RUN echo hello > /greeting\n")
    out = tmp_path / "added"
    arch = get_arch(host_arch())
    buildah.build_containerfile(
        flavor, arch, "1.0.0", base / "image.oci.tar", base / "oci", out, 1700000000
    )
    layers, config = buildah.added_layers(out)
    assert len(layers) == 1
    with tarfile.open(layers[0].blob, "r:gz") as tar:
        assert tar.extractfile("greeting").read() == b"hello\n"
    assert config["Labels"]["io.cos.arch"] == arch.oci
    info = json.loads((out / buildah.ADDED_INFO).read_text())
    assert [s["step"].split()[0] for s in info["steps"]] == ["FROM", "RUN"]
    assert not list(tmp_path.glob("added/../.buildah-*")), "buildah's storage was left"


def test_two_kernels_are_blamed_on_the_line_that_added_the_second(tmp_path):
    """The problem's text changes as later layers change the kernels; the blame stays."""
    parent = system_tree(tmp_path / "parent", "x86_64")
    added = layer_folder(
        tmp_path / "added",
        [
            (
                "CF:3: RUN install a second kernel",
                {"boot/vmlinuz-6.12.0-2": b"k", "usr/lib/modules/6.12.0-2/m": b"m"},
            ),
            (
                "CF:4: RUN upgrade",
                {
                    "boot/vmlinuz-6.12.0-2": None,
                    "boot/vmlinuz-6.12.0-3": b"k",
                    "usr/lib/modules/6.12.0-3/m": b"m",
                },
            ),
        ],
    )
    with pytest.raises(CosError) as raised:
        derivative.make_derived_rootfs(
            derived_flavor(tmp_path, "RUN true\n"), get_arch("x86_64"), parent, added,
            tmp_path / "key", "test", 1700000000, tmp_path / "rootfs", tmp_path / "finish.tar",
            log=lambda _: None,
        )  # fmt: skip
    assert str(raised.value) == (
        "CF:3: RUN install a second kernel: the image has 2 kernels (6.1.0-1, 6.12.0-3); "
        "a cOS image boots one: remove the others"
    )


def layer_origins_of(tmp_path: Path, steps: str) -> list[str]:
    """buildah's layers of a derivative of the tiny image, as origins relative to its
    Containerfile ("LINE: INSTRUCTION")."""
    base = tiny_image(tmp_path)
    flavor = derived_flavor(tmp_path, steps)
    out = tmp_path / "added"
    buildah.build_containerfile(
        flavor, get_arch(host_arch()), "1.0.0", base / "image.oci.tar", base / "oci", out,
        1700000000, log=lambda _: None,
    )  # fmt: skip
    return [o.removeprefix(f"{flavor.containerfile}:") for o in buildah.layer_origins(out)]


@needs_buildah
def test_buildah_gives_each_run_and_copy_its_layer_and_line(tmp_path):
    steps = (
        "RUN echo one > /one\nENV A=1\nCOPY flavor.yaml /etc/copied.yaml\n"
        "RUN echo two && \\\n  echo two > /two\n"
    )
    assert layer_origins_of(tmp_path, steps) == [
        "3: RUN echo one > /one",
        "5: COPY flavor.yaml /etc/copied.yaml",
        "6: RUN echo two && echo two > /two",
    ]


@needs_buildah
def test_a_final_stage_from_an_earlier_stage_names_the_lines_of_both(tmp_path):
    steps = "RUN echo one > /one\nFROM 0 AS next\nCOPY flavor.yaml /etc/copied.yaml\n"
    assert layer_origins_of(tmp_path, steps) == [
        "3: RUN echo one > /one",
        "5: COPY flavor.yaml /etc/copied.yaml",
    ]


@needs_buildah
def test_a_failing_run_step_names_its_line_and_shows_its_output(tmp_path):
    base = tiny_image(tmp_path)
    flavor = derived_flavor(
        tmp_path, "RUN echo fine\nRUN echo this-went-wrong >&2 && \\\n    exit 3\n"
    )
    with pytest.raises(CosError) as raised:
        buildah.build_containerfile(
            flavor, get_arch(host_arch()), "1.0.0", base / "image.oci.tar", base / "oci",
            tmp_path / "added", 1700000000, log=lambda _: None,
        )  # fmt: skip
    message = str(raised.value)
    assert message.startswith(f"{flavor.containerfile}:4: RUN echo this-went-wrong"), message
    assert "failed (buildah exit" in message and "this-went-wrong" in message
    assert not list(tmp_path.glob(".buildah-*"))


# invoke build --image REF


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("127.0.0.1:5000/cos/web-appliance:0.1.0", "web-appliance"),
        ("docker://registry.example/a/b@sha256:" + "0" * 64, "b"),
        (
            "oci-archive:/work/build/images/web-appliance/x86_64/image.oci.tar",
            "web-appliance-x86-64",
        ),
        ("oci:/tmp/My_Image:latest", "my-image"),
    ],
)
def test_an_image_reference_names_its_build_folder(reference, name):
    assert fromimage.name_of(reference) == name


def test_a_missing_archive_or_layout_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("COS_KEYS_DIR", str(tmp_path / "keys"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    for reference, message in (
        (f"oci:{tmp_path}/none:latest", f"{tmp_path}/none is not an OCI layout folder"),
        (f"oci:{tmp_path}/file", f"{tmp_path}/file is not an OCI layout folder"),
        (f"oci-archive:{tmp_path}/none.tar", f"{tmp_path}/none.tar is not an OCI archive file"),
        (f"oci-archive:{tmp_path}/folder", f"{tmp_path}/folder is not an OCI archive file"),
    ):
        with pytest.raises(CosError) as raised:
            fromimage.build_from_image(reference, host_arch(), log=lambda _: None)
        assert str(raised.value) == f"--image {reference}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]


def test_a_path_without_a_transport_is_refused():
    with pytest.raises(CosError, match=r"--image /tmp/x.tar: not an image reference; use"):
        fromimage.source_of("/tmp/x.tar")
    assert fromimage.source_of("host:5000/cos/x:1") == "docker://host:5000/cos/x:1"


@needs("skopeo")
def test_an_image_without_the_cos_packages_is_refused_naming_what_it_lacks(tmp_path, monkeypatch):
    base = tiny_image(tmp_path)
    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))
    reference = f"oci-archive:{base / 'image.oci.tar'}"
    with pytest.raises(CosError) as raised:
        fromimage.build_from_image(reference, host_arch(), log=lambda _: None)
    message = str(raised.value)
    assert message.startswith(f"--image {reference}: the image lacks what a cOS system needs: ")
    for part in ("the agent (package cos-agent", "the initramfs tool", "a kernel", "GRUB's"):
        assert part in message, message
    folder = tmp_path / "build/images/from-image" / fromimage.name_of(reference) / host_arch()
    assert (folder / "imported/index.json").is_file()  # the import stage finished
    assert sorted(p.name for p in folder.iterdir()) == [".stamps", "imported"]


@needs("skopeo")
@needs("docker-registry")
@pytest.mark.parametrize("transport", ["registry", "oci"])
def test_an_image_is_imported_from_a_registry_or_an_oci_layout_as_it_is(tmp_path, transport):
    """The import stage's copy holds the very manifest the source holds, from a real
    registry on loopback (HOST/REPO:TAG, no transport) or from an OCI layout (oci:DIR)."""
    from local_registry import free_port, quiet

    from toolkit import registry

    base = tiny_image(tmp_path)
    expected = oci.top_descriptor(base / "oci")["digest"]
    layout = tmp_path / "imported"
    if transport == "registry":
        address = registry.start_registry(tmp_path / "storage", port=free_port(), log=quiet)
        try:
            reference = f"{address}/cos/tiny:1"
            assert registry.push_layout(base / "oci", reference) == expected
            fromimage.import_image(reference, get_arch(host_arch()), layout, log=quiet)
        finally:
            registry.stop_registry(tmp_path / "storage", log=quiet)
    else:
        reference = f"oci:{base / 'oci'}"
        fromimage.import_image(reference, get_arch(host_arch()), layout, log=quiet)
    assert oci.top_descriptor(layout)["digest"] == expected
    # no io.cos.flavor label: the name comes from the reference
    named = fromimage.image_flavor(reference, layout, get_arch(host_arch())).name
    assert named == ("tiny" if transport == "registry" else fromimage.name_of(reference))


@needs("skopeo")
def test_push_of_an_image_checks_the_registry_before_building(tmp_path, monkeypatch):
    """The repository is named by the image's label, read at its source: a registry that
    refuses (here: nothing listens) fails the push before anything is built."""
    from toolkit.publish import push_built_image

    monkeypatch.setenv("COS_BUILD_DIR", str(tmp_path / "build"))
    base = tiny_image(tmp_path, labels={"io.cos.flavor": "tiny-appliance"})
    reference = f"oci:{base / 'oci'}"
    labels = fromimage.source_labels(reference, get_arch(host_arch()))
    assert labels["io.cos.flavor"] == "tiny-appliance", labels
    with pytest.raises(CosError, match="registry at 127.0.0.1:9 is not answering"):
        push_built_image(reference, None, "127.0.0.1:9/team", check_access=True, log=print)
    asked = []
    monkeypatch.setattr("toolkit.registry.probe_push", asked.append)

    def build(*_args, **_kwargs):
        raise LookupError("the build comes after the probe")

    monkeypatch.setattr("toolkit.fromimage.build_from_image", build)
    with pytest.raises(LookupError):
        push_built_image(reference, None, "127.0.0.1:9/team", check_access=True, log=print)
    assert asked == ["127.0.0.1:9/team/tiny-appliance"]
    assert not (tmp_path / "build").exists()
