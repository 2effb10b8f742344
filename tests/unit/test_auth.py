"""cos.auth's parsing: challenges as registries send them, scopes merged per resource."""

import pytest

from cos.auth import find_credentials, merge_scopes, parse_challenge
from cos.errors import CosError


def test_bearer_challenge_with_quoted_commas_and_error():
    value = (
        'Bearer realm="https://auth.example.test/token",service="registry.example.test",'
        'scope="repository:cos/debian-trixie:pull,push",error="insufficient_scope"'
    )
    assert parse_challenge(value) == (
        "bearer",
        {
            "realm": "https://auth.example.test/token",
            "service": "registry.example.test",
            "scope": "repository:cos/debian-trixie:pull,push",
            "error": "insufficient_scope",
        },
    )


def test_basic_challenge_and_escaped_quote():
    assert parse_challenge('Basic realm="say \\"hi\\""') == ("basic", {"realm": 'say "hi"'})


def test_scopes_merge_per_resource_keeping_order():
    assert merge_scopes(
        ["repository:a:pull", "repository:b:pull", "repository:a:pull,push", "repository:a:push"]
    ) == ["repository:a:pull,push", "repository:b:pull"]


def test_half_the_environment_credentials_is_an_error(monkeypatch):
    monkeypatch.delenv("COS_REGISTRY_TOKEN", raising=False)
    monkeypatch.delenv("COS_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("COS_REGISTRY_USER", "alice")
    with pytest.raises(CosError, match="COS_REGISTRY_PASSWORD is not set"):
        find_credentials("127.0.0.1:5000", "cos/x")


def test_environment_token_wins_over_auth_files(monkeypatch, tmp_path):
    (tmp_path / "auth.json").write_text('{"auths": {"127.0.0.1:5000": {"auth": "YTpi"}}}')
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    monkeypatch.setenv("COS_REGISTRY_TOKEN", "t0ken")
    found = find_credentials("127.0.0.1:5000", "cos/x")
    assert (found.kind, found.secret, found.source) == ("token", "t0ken", "COS_REGISTRY_TOKEN")
    monkeypatch.delenv("COS_REGISTRY_TOKEN")
    monkeypatch.delenv("COS_REGISTRY_USER", raising=False)
    monkeypatch.delenv("COS_REGISTRY_PASSWORD", raising=False)
    found = find_credentials("127.0.0.1:5000", "cos/x")
    assert (found.username, found.secret) == ("a", "b")
    assert found.source == f"{tmp_path / 'auth.json'} (auths.127.0.0.1:5000)"


def test_scopes_in_another_action_order_add_nothing():
    """docker-registry lists a challenge's actions in map order: push,pull or pull,push."""
    held = ["repository:a:push,pull"]
    assert merge_scopes([*held, "repository:a:pull,push"]) == merge_scopes(held)
