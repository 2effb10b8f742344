"""flavor.yaml validation: the shipped flavors load; bad files name file, field and problem."""

from pathlib import Path

import pytest

from toolkit.errors import CosError
from toolkit.flavors import DEFAULT_FLAVOR, flavor_names, load_flavor

GOOD = """\
name: {name}
description: test flavor
suite: trixie
version: 1.0.0
architectures: [x86_64, aarch64]
kernel:
  x86_64: linux-image-cloud-amd64
  aarch64: linux-image-cloud-arm64
packages: [cos-system]
"""


def write(root: Path, name: str, text: str) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    path = root / name / "flavor.yaml"
    path.write_text(text)
    return path


def test_shipped_flavors_load():
    assert DEFAULT_FLAVOR in flavor_names()
    for name in flavor_names():
        flavor = load_flavor(name)
        assert flavor.name == name
        assert set(flavor.architectures) <= {"x86_64", "aarch64"}
        for arch in flavor.architectures:
            assert flavor.packages_for(arch)[0].startswith("linux-image-")


def test_bookworm_inherits_from_trixie():
    flavor = load_flavor("debian-bookworm")
    assert flavor.suite == "bookworm"
    assert flavor.parent == "debian-trixie"
    assert "cos-system" in flavor.packages
    assert flavor.kernel == load_flavor("debian-trixie").kernel


def test_unknown_flavor_lists_valid_ones(tmp_path):
    write(tmp_path, "alpha", GOOD.format(name="alpha"))
    with pytest.raises(CosError, match=r"unknown flavor 'beta'; valid flavors: alpha"):
        load_flavor("beta", tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\n  bad: [", r"flavor.yaml: line \d+, column \d+: malformed YAML"),
        ("- a list\n", r"expected a mapping"),
        (GOOD.replace("suite: trixie\n", ""), r"field 'suite': is required"),
        (GOOD + "colour: blue\n", r"field 'colour': unknown field"),
        (
            GOOD.replace("[x86_64, aarch64]", "[x86_64, mips]"),
            r"field 'architectures\[1\]': unknown arch 'mips'",
        ),
        (
            GOOD.replace("  aarch64: linux-image-cloud-arm64\n", ""),
            r"field 'kernel': names no kernel package for arch 'aarch64'",
        ),
        (
            GOOD.replace("packages: [cos-system]", "packages: cos-system"),
            r"field 'packages': must be list",
        ),
        (
            GOOD.replace("version: 1.0.0", "version: v1"),
            r"field 'version': 'v1' must start with a digit",
        ),
        (
            GOOD.replace("name: {name}", "name: other"),
            r"field 'name': is 'other' but the folder is 'f'",
        ),
    ],
)
def test_bad_flavor_files(tmp_path, text, message):
    path = write(tmp_path, "f", text.replace("{name}", "f"))
    with pytest.raises(CosError, match=message) as info:
        load_flavor("f", tmp_path)
    assert str(path) in str(info.value)


def test_parent_cycle_is_named(tmp_path):
    write(tmp_path, "a", GOOD.format(name="a") + "parent: b\n")
    write(tmp_path, "b", GOOD.format(name="b") + "parent: a\n")
    with pytest.raises(CosError, match=r"flavor parent cycle: a -> b -> a"):
        load_flavor("a", tmp_path)
