"""Registry credentials and the Distribution auth challenge, for cos.registry's requests.

Credentials are the ones users already have, first found wins:
- the environment: COS_REGISTRY_TOKEN (a registry token, sent as is), or
  COS_REGISTRY_USER with COS_REGISTRY_PASSWORD (a password or an access token, such as
  GitHub's). They apply to every registry this process talks to, so set them for one push;
- the containers auth file (REGISTRY_AUTH_FILE, else ${XDG_RUNTIME_DIR}/containers/auth.json
  and ~/.config/containers/auth.json), then docker's ($DOCKER_CONFIG/config.json, else
  ~/.docker/config.json): an `auths` entry for the registry or for a namespace of it (the
  longest match wins), with `auth` (base64 user:password) or `identitytoken`; or a
  credential helper (`credHelpers`, `credsStore`: the `docker-credential-NAME get` program).

A registry that answers 401 says how to authenticate (WWW-Authenticate): `Basic` gets
the user and password; `Bearer realm=...,service=...,scope=...` gets a token from the realm
for that scope, with the credentials when there are any (anonymously otherwise, as public
pulls work), and the token is sent until it expires. Credentials are sent only where a
challenge asked for them, and never to a plain-HTTP realm off this machine.
"""

import base64
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cos.errors import CosError

ENV_USER, ENV_PASSWORD, ENV_TOKEN = (
    "COS_REGISTRY_USER",
    "COS_REGISTRY_PASSWORD",
    "COS_REGISTRY_TOKEN",
)
TOKEN_LIFETIME = 60  # seconds a token lives when its server does not say (the spec's default)
HELPER_TIMEOUT = 30


@dataclass(frozen=True)
class Credentials:
    username: str  # "" for an identity token or a registry token
    secret: str
    source: str  # where they were found, for messages
    kind: str = "password"  # password | identity-token (OAuth2 refresh token) | token

    def describe(self) -> str:
        who = f"user {self.username!r}" if self.username else f"the {self.kind}"
        return f"{who} from {self.source}"


# ---------------------------------------------------------------- finding credentials


def auth_files() -> list[tuple[Path, bool]]:
    """(path, named explicitly) in the order the containers tools read them."""
    home = Path.home()
    explicit = os.environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        files = [(Path(explicit), True)]
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        default = Path(runtime, "containers") if runtime else Path(f"/run/containers/{os.getuid()}")
        files = [
            (default / "auth.json", False),
            (home / ".config" / "containers" / "auth.json", False),
        ]
    docker = os.environ.get("DOCKER_CONFIG")
    files.append(
        (Path(docker) / "config.json" if docker else home / ".docker" / "config.json", False)
    )
    return files


def _key_matches(key: str, host: str, repo: str) -> int:
    """How specific an `auths` key is for host/repo (0: no match). Docker's keys may be
    URLs (https://host/v1/); the containers tools' may name a namespace (host/ns)."""
    if "://" in key:
        key = key.split("://", 1)[1].split("/", 1)[0]
    key = key.rstrip("/")
    target = f"{host}/{repo}" if repo else host
    if target == key or target.startswith(key + "/"):
        return len(key)
    return 0


def _from_helper(helper: str, host: str, source: Path) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run(
            [program, "get"],
            input=host,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CosError(f"{source}: credential helper {program} for {host} failed: {e}") from None
    if result.returncode != 0:
        if "credentials not found" in (result.stdout + result.stderr).lower():
            return None
        detail = (result.stderr or result.stdout).strip()[:300]
        raise CosError(f"{source}: credential helper {program} for {host} failed: {detail}")
    try:
        answer = json.loads(result.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise CosError(f"{source}: credential helper {program} gave no Username/Secret") from None
    where = f"{program} (named in {source})"
    if username == "<token>":  # docker's convention for an identity token
        return Credentials("", secret, where, "identity-token")
    return Credentials(username, secret, where)


def _from_file(path: Path, host: str, repo: str) -> Credentials | None:
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise CosError(f"{path}: cannot read registry credentials: {e}") from None
    helper = (config.get("credHelpers") or {}).get(host)
    if helper:
        return _from_helper(helper, host, path)
    entries = config.get("auths") or {}
    ranked = sorted(
        ((_key_matches(k, host, repo), k) for k in entries if isinstance(entries[k], dict)),
        reverse=True,
    )
    for rank, key in ranked:
        entry = entries[key]
        if not rank or not (entry.get("auth") or entry.get("identitytoken")):
            continue
        where = f"{path} (auths.{key})"
        if entry.get("identitytoken"):
            return Credentials("", entry["identitytoken"], where, "identity-token")
        try:
            username, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise CosError(f"{where}: `auth` is not base64 of user:password")
        return Credentials(username, password, where)
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], host, path)
    return None


def find_credentials(host: str, repo: str = "") -> Credentials | None:
    """The credentials for host (and repository repo), or None; see the module's text."""
    token = os.environ.get(ENV_TOKEN)
    if token:
        return Credentials("", token, ENV_TOKEN, "token")
    user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if user or password:
        if not (user and password):
            missing = ENV_PASSWORD if user else ENV_USER
            raise CosError(f"{missing} is not set: {ENV_USER} and {ENV_PASSWORD} go together")
        return Credentials(user, password, f"{ENV_USER}/{ENV_PASSWORD}")
    for path, explicit in auth_files():
        if not path.exists():
            if explicit:
                raise CosError(f"REGISTRY_AUTH_FILE names {path}, which does not exist")
            continue
        found = _from_file(path, host, repo)
        if found:
            return found
    return None


def searched() -> str:
    """Where credentials were looked for, for a message that found none."""
    files = ", ".join(str(p) for p, _ in auth_files())
    return f"{ENV_USER}/{ENV_PASSWORD}, {ENV_TOKEN}, {files}"


# ---------------------------------------------------------------- challenges

_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="...",scope="..."' -> ('bearer', {...})."""
    scheme, _, rest = value.strip().partition(" ")
    params = {m[1].lower(): (m[2] if m[2] is not None else m[3]) for m in _PARAM.finditer(rest)}
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


def merge_scopes(scopes: list[str]) -> list[str]:
    """'repository:a:pull' + 'repository:a:pull,push' -> ['repository:a:pull,push']: one
    token keeps every right asked for so far on a resource."""
    merged: dict[str, list[str]] = {}
    for scope in scopes:
        resource, _, actions = scope.rpartition(":")
        kept = merged.setdefault(resource or scope, [])
        kept += [a for a in actions.split(",") if a and a not in kept]
    # Actions sorted: registries list them in no fixed order, and messages should not vary.
    return [f"{resource}:{','.join(sorted(actions))}" for resource, actions in merged.items()]


def _is_local(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass
class _Grant:
    header: str  # the Authorization value
    scopes: list[str] = field(default_factory=list)
    expires: float = float("inf")
    challenge: dict[str, str] = field(default_factory=dict)


class Authenticator:
    """What this process has learnt per registry: the header to send, per repository."""

    def __init__(self, opener: urllib.request.OpenerDirector, timeout: float):
        self.opener, self.timeout = opener, timeout
        self.grants: dict[tuple[str, str], _Grant] = {}  # (host, repository) -> grant

    def header(self, host: str, repo: str) -> str | None:
        """The Authorization header for a request to host/repo, refreshing a token that
        expired (a long upload must not start with one the registry will refuse)."""
        grant = self.grants.get((host, repo))
        if grant is None:
            return None
        if time.monotonic() >= grant.expires and grant.challenge:
            grant = self._token(host, repo, grant.challenge, grant.scopes)
        return grant.header

    def answer(self, host: str, repo: str, challenge_value: str | None, sent: str | None) -> None:
        """Learn from a 401: get what the challenge asks for, or raise a CosError that says
        which registry refused what. `sent` is the Authorization the 401 came back for."""
        if not challenge_value:
            raise CosError(f"registry {host} answered 401 without saying how to authenticate")
        scheme, params = parse_challenge(challenge_value)
        credentials = find_credentials(host, repo)
        if scheme == "basic":
            if credentials is None:
                raise CosError(
                    f"registry {host} asks for a user and password (HTTP 401, Basic "
                    f"realm={params.get('realm', '')!r}) and none were found; looked in "
                    f"{searched()}"
                )
            if credentials.kind != "password":
                raise CosError(
                    f"registry {host} asks for a user and password, but {credentials.source} "
                    f"holds a {credentials.kind}"
                )
            value = (
                "Basic "
                + base64.b64encode(f"{credentials.username}:{credentials.secret}".encode()).decode()
            )
            if value == sent:
                raise CosError(
                    f"registry {host} refused the credentials of {credentials.describe()} "
                    "(HTTP 401): wrong user or password?"
                )
            self.grants[(host, repo)] = _Grant(value)  # auth files can differ per namespace
            return
        if scheme != "bearer":
            raise CosError(f"registry {host} asks for {scheme!r} authentication, unknown here")
        if credentials is not None and credentials.kind == "token":
            if sent == f"Bearer {credentials.secret}":
                raise CosError(f"registry {host} refused the token from {credentials.source}")
            self.grants[(host, repo)] = _Grant(f"Bearer {credentials.secret}")
            return
        scope = params.get("scope", "")
        held = self.grants.get((host, repo))
        scopes = merge_scopes([*(held.scopes if held else []), *([scope] if scope else [])])
        if held and sent == held.header and scopes == merge_scopes(held.scopes):
            # The token was asked for with every right this challenge names (in any order:
            # registries list actions as they come), and still refused.
            who = credentials.describe() if credentials else "anonymous access"
            error = params.get("error", "")
            raise CosError(
                f"registry {host} refused the token that {params.get('realm')} issued to "
                f"{who} for {', '.join(scopes)!r}{f' ({error})' if error else ''}: not allowed"
                + ("" if credentials else f"; no credentials were found in {searched()}")
            )
        self._token(host, repo, params, scopes)

    def _token(self, host: str, repo: str, challenge: dict[str, str], scopes: list[str]) -> _Grant:
        realm = challenge.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise CosError(f"registry {host} names no usable token realm: {realm!r}")
        credentials = find_credentials(host, repo)
        if credentials and realm.startswith("http://") and not _is_local(realm):
            raise CosError(f"registry {host} sends credentials to {realm} over plain HTTP; refused")
        query = [("service", challenge["service"])] if challenge.get("service") else []
        query += [("scope", s) for s in scopes]
        headers, data = {}, None
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        if credentials and credentials.kind == "identity-token":
            # OAuth2 refresh-token grant, as docker does with an identity token.
            form = [("grant_type", "refresh_token"), ("refresh_token", credentials.secret)]
            form += [("client_id", "cos"), *query]
            url, data = realm, urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif credentials:
            pair = f"{credentials.username}:{credentials.secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        who = credentials.describe() if credentials else "anonymous access"
        request = urllib.request.Request(url, data=data, headers=headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace").strip()
            hint = "" if credentials else f"; no credentials were found in {searched()}"
            raise CosError(
                f"token server {realm} (for registry {host}) refused {who}: "
                f"HTTP {e.code} {e.reason} {detail}{hint}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            raise CosError(
                f"token server {realm} (for registry {host}) is not answering: {e}"
            ) from None
        except ValueError:
            raise CosError(f"token server {realm} (for registry {host}) sent no JSON") from None
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise CosError(f"token server {realm} (for registry {host}) sent no token")
        lifetime = int(answer.get("expires_in") or TOKEN_LIFETIME)
        # Refresh a little early: a request must not reach the registry just after expiry.
        expires = time.monotonic() + max(lifetime - 10, lifetime / 2)
        grant = _Grant(f"Bearer {token}", scopes, expires, dict(challenge))
        self.grants[(host, repo)] = grant
        return grant
