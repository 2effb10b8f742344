"""package.yaml validation, file expansion and dependency order, on package trees in tmp_path."""

import os
import textwrap
from pathlib import Path

import pytest

from toolkit.errors import CosError
from toolkit.packages import load_package, load_tree, package_entries


def write_package(tree: Path, name: str, yaml_text: str | None = None, **files: str) -> Path:
    """tree/name/package.yaml (a minimal valid one by default) plus the given files."""
    folder = tree / name
    folder.mkdir(parents=True, exist_ok=True)
    if yaml_text is None:
        yaml_text = f"name: {name}\nversion: 0.1.0\narchitecture: all\ndescription: {name}\n"
    (folder / "package.yaml").write_text(textwrap.dedent(yaml_text))
    for rel, content in files.items():
        path = folder / rel.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return folder


GOOD = """\
    name: cos-good
    version: 0.1.0
    architecture: any
    description: |
      Good package
      Longer text.
    depends: [cos-base, "python3 (>= 3.11)", "busybox | busybox-static"]
    provides: [linux-initramfs-tool]
    conflicts: [initramfs-tools]
    scripts: {postinst: postinst}
    conffiles: [/etc/cos/good.conf]
    files:
      - {src: bin/run, dest: /usr/bin/cos-good}
      - {src: good.conf, dest: /etc/cos/good.conf}
      - {src: share, dest: /usr/share/cos-good, mode: "0640"}
"""


def good_package(tree: Path) -> Path:
    folder = write_package(
        tree,
        "cos-good",
        GOOD,
        postinst="#!/bin/sh\nexit 0\n",
        bin__run="#!/bin/sh\necho run\n",
        **{"good.conf": "a=1\n"},
        share__a__b="b\n",
        share__c="c\n",
    )
    (folder / "bin" / "run").chmod(0o755)
    return folder


def test_good_package_is_read_with_defaults(tmp_path):
    spec = load_package(good_package(tmp_path))
    assert spec.name == "cos-good" and spec.version == "0.1.0"
    assert spec.description.splitlines() == ["Good package", "Longer text."]
    assert spec.depends == ["cos-base", "python3 (>= 3.11)", "busybox | busybox-static"]
    assert spec.tree_depends() == ["cos-base"]
    assert spec.deb_arches() == ["amd64", "arm64"]
    assert spec.maintainer == "cOS developers <cos-dev@lists.invalid>"
    assert (spec.section, spec.priority) == ("admin", "optional")
    assert spec.scripts == {"postinst": tmp_path / "cos-good" / "postinst"}
    assert [f.dest for f in spec.files] == [
        "/usr/bin/cos-good",
        "/etc/cos/good.conf",
        "/usr/share/cos-good",
    ]


def test_arch_all_is_one_deb(tmp_path):
    assert load_package(write_package(tmp_path, "cos-x")).deb_arches() == ["all"]


def test_files_expand_recursively_with_modes(tmp_path):
    folder = good_package(tmp_path)
    (folder / "share" / "__pycache__").mkdir()
    (folder / "share" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    os.symlink("c", folder / "share" / "link")
    entries = {e.path: e for e in package_entries(load_package(folder))}
    assert sorted(entries) == [
        "/etc/cos/good.conf",
        "/usr/bin/cos-good",
        "/usr/share/cos-good",
        "/usr/share/cos-good/a",
        "/usr/share/cos-good/a/b",
        "/usr/share/cos-good/c",
        "/usr/share/cos-good/link",
    ]
    assert entries["/usr/bin/cos-good"].mode == 0o755  # executable source
    assert entries["/etc/cos/good.conf"].mode == 0o644  # plain source
    assert entries["/usr/share/cos-good/c"].mode == 0o640  # explicit mode, files in a dir
    assert (
        entries["/usr/share/cos-good/a"].is_dir and entries["/usr/share/cos-good/a"].mode == 0o755
    )
    assert entries["/usr/share/cos-good/link"].link == "c"


HEAD = "name: cos-bad\nversion: 1\narchitecture: all\ndescription: x\n"
BAD_CASES = {
    "malformed yaml": ("name: [cos-bad\n", ["malformed YAML", "line"]),
    "not a mapping": ("- a\n- b\n", ["expected a mapping"]),
    "missing field": (
        "name: cos-bad\narchitecture: all\ndescription: x\n",
        ["field 'version'", "is required"],
    ),
    "wrong type": (HEAD + "depends: cos-base\n", ["field 'depends'", "must be list"]),
    "unknown field": (HEAD + "colour: red\n", ["field 'colour'", "unknown field"]),
    "bad architecture": (
        HEAD.replace("all", "i386"),
        ["field 'architecture'", "'all' or 'any'", "i386"],
    ),
    "name not folder": (HEAD.replace("cos-bad", "cos-other"), ["field 'name'", "folder name"]),
    "bad name": (HEAD.replace("cos-bad", "Cos_Bad"), ["field 'name'", "Debian package name"]),
    "float version": (
        HEAD.replace("version: 1", "version: 1.10"),
        ["field 'version'", "must be str or int"],
    ),
    "bad version": (
        HEAD.replace("version: 1", "version: v1"),
        ["field 'version'", "Debian version"],
    ),
    "empty description": (
        HEAD.replace("description: x", "description: ' '"),
        ["field 'description'", "synopsis"],
    ),
    "bad relation": (
        HEAD + "depends: ['python3 (>= 3.11']\n",
        ["field 'depends[0]'", "Debian relation"],
    ),
    "two relations in one item": (
        HEAD + "depends: ['a, b']\n",
        ["field 'depends[0]'", "one relation per list item"],
    ),
    "missing src": (
        HEAD + "files:\n  - {src: here, dest: /a}\n  - {src: nothere, dest: /b}\n",
        ["field 'files[1].src'", "nothere does not exist"],
    ),
    "src escapes folder": (
        HEAD + "files: [{src: ../cos-bad/here, dest: /a}]\n",
        ["field 'files[0].src'", "stay inside"],
    ),
    "relative dest": (
        HEAD + "files: [{src: here, dest: usr/a}]\n",
        ["field 'files[0].dest'", "absolute"],
    ),
    "unquoted mode": (
        HEAD + "files: [{src: here, dest: /a, mode: 0755}]\n",
        ["field 'files[0].mode'", "quoted octal"],
    ),
    "unknown file field": (
        HEAD + "files: [{src: here, dest: /a, owner: me}]\n",
        ["field 'files[0].owner'", "unknown field"],
    ),
    "unknown script": (HEAD + "scripts: {config: here}\n", ["field 'scripts.config'", "postinst"]),
    "script without shebang": (
        HEAD + "scripts: {postinst: here}\n",
        ["field 'scripts.postinst'", "#!"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_package_yaml_names_file_and_field(tmp_path, case):
    yaml_text, expected = BAD_CASES[case]
    folder = write_package(tmp_path, "cos-bad", yaml_text, here="echo no shebang\n")
    with pytest.raises(CosError) as info:
        load_package(folder)
    message = str(info.value)
    assert str(folder / "package.yaml") in message
    for part in expected:
        assert part in message


def test_conffile_not_installed_is_reported(tmp_path):
    folder = write_package(tmp_path, "cos-bad", HEAD + "conffiles: [/etc/nope]\n")
    with pytest.raises(CosError, match=r"field 'conffiles\[0\]': /etc/nope is not a regular file"):
        package_entries(load_package(folder))


def test_overlapping_files_are_reported(tmp_path):
    folder = write_package(
        tmp_path,
        "cos-bad",
        HEAD + "files: [{src: a, dest: /x}, {src: b, dest: /x}]\n",
        a="a",
        b="b",
    )
    with pytest.raises(CosError, match=r"files\[1\]'.*/x"):
        package_entries(load_package(folder))


def dep_yaml(name: str, *deps: str) -> str:
    return (
        f"name: {name}\nversion: 1\narchitecture: all\ndescription: {name}\n"
        f"depends: [{', '.join(deps)}]\n"
    )


def test_tree_is_in_dependency_order(tmp_path):
    write_package(tmp_path, "cos-app", dep_yaml("cos-app", "cos-lib", "cos-agent", "python3"))
    write_package(tmp_path, "cos-lib", dep_yaml("cos-lib", "cos-base"))
    write_package(tmp_path, "cos-base", dep_yaml("cos-base", "busybox"))
    write_package(tmp_path, "cos-agent", dep_yaml("cos-agent", "'cos-base | cos-lib'"))
    write_package(tmp_path, "cos-zeta")
    names = [spec.name for spec in load_tree(tmp_path)]
    assert sorted(names) == ["cos-agent", "cos-app", "cos-base", "cos-lib", "cos-zeta"]
    for package, dep in [
        ("cos-app", "cos-lib"),
        ("cos-app", "cos-agent"),
        ("cos-lib", "cos-base"),
        ("cos-agent", "cos-base"),
        ("cos-agent", "cos-lib"),
    ]:
        assert names.index(dep) < names.index(package)
    assert names == [spec.name for spec in load_tree(tmp_path)]  # stable


def test_unknown_tree_dependency(tmp_path):
    write_package(tmp_path, "cos-a", dep_yaml("cos-a", "'cos-foo (>= 1)'", "debian-thing"))
    with pytest.raises(
        CosError, match="package.yaml of cos-a .*depends on unknown package cos-foo"
    ):
        load_tree(tmp_path)


def test_dependency_cycle_is_named(tmp_path):
    write_package(tmp_path, "cos-a", dep_yaml("cos-a", "cos-b"))
    write_package(tmp_path, "cos-b", dep_yaml("cos-b", "cos-c"))
    write_package(tmp_path, "cos-c", dep_yaml("cos-c", "cos-a"))
    write_package(tmp_path, "cos-d", dep_yaml("cos-d", "cos-a"))
    with pytest.raises(CosError, match="cycle.*cos-a -> cos-b -> cos-c -> cos-a"):
        load_tree(tmp_path)


def test_folder_without_package_yaml_is_an_error(tmp_path):
    write_package(tmp_path, "cos-a")
    (tmp_path / "stray").mkdir()
    with pytest.raises(CosError, match="stray: no package.yaml"):
        load_tree(tmp_path)


def test_missing_tree(tmp_path):
    with pytest.raises(CosError, match="package tree not found"):
        load_tree(tmp_path / "nope")
