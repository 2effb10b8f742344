"""`invoke push --registry HOST[/NAMESPACE]`: what it accepts and where images go."""

import pytest

from toolkit.errors import CosError
from toolkit.publish import destination, push_flavors, repository_for


@pytest.mark.parametrize(
    ("value", "repository"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000/cos/debian-trixie"),  # the local registry's layout
        ("registry.example.test", "registry.example.test/cos/debian-trixie"),
        ("registry.example.test/owner", "registry.example.test/owner/debian-trixie"),
        ("localhost:5000/a/b-c/d_e/", "localhost:5000/a/b-c/d_e/debian-trixie"),
    ],
)
def test_destination_and_repository(value, repository):
    assert repository_for(destination(value), "debian-trixie") == repository


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://registry.example.test/owner", "without a scheme"),
        ("owner/images", "'owner' is not a registry host"),
        ("registry.example.test/Owner", "namespace component 'Owner' is not a valid"),
        ("registry.example.test/owner:tag", "namespace component 'owner:tag'"),
        ("registry.example.test/a//b", "namespace component ''"),
    ],
)
def test_bad_destination_is_named(value, message):
    with pytest.raises(CosError, match=f"--registry '{value}'.*{message}"):
        destination(value)


def test_unknown_flavor_fails_before_any_registry_request():
    with pytest.raises(CosError, match="unknown flavor 'nope'; valid flavors: .*debian-trixie"):
        # An address nothing listens on: a request would fail with another message.
        push_flavors("nope", None, "127.0.0.1:9/team", check_access=True, log=lambda _: None)
