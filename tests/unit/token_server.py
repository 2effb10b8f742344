"""A Distribution token server on 127.0.0.1 for the tests of authenticated pushes: it checks
a user's password (HTTP Basic) or refresh token (OAuth2 POST, docker's identity token) and
issues a JWT, signed with a key whose self-signed certificate the registry trusts
(`rootcertbundle`), that grants the requested actions the user is allowed. Anonymous
requests get a token that grants nothing, as public token servers do for private repos.
"""

import base64
import datetime
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVICE = "cos-test-registry"
ISSUER = "cos-test-token-server"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class User:
    password: str
    actions: list[str]  # granted on every repository: ["pull"] or ["pull", "push"]
    refresh_token: str = ""


@dataclass
class TokenServer:
    folder: Path
    users: dict[str, User]
    expires_in: int = 300
    issued: list[tuple[str, list[str]]] = field(default_factory=list)  # (user, scopes)

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = self.folder / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        server = self
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def registry_auth(self) -> dict:
        """The `auth` section of the registry's configuration that trusts this server."""
        return {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.bundle),
            }
        }

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def user_for(self, authorization: str | None, form: dict[str, str]) -> str | None:
        """The authenticated user, "" for anonymous, None for bad credentials."""
        if form.get("grant_type") == "refresh_token":
            for name, user in self.users.items():
                if user.refresh_token and secrets.compare_digest(
                    user.refresh_token, form.get("refresh_token", "")
                ):
                    return name
            return None
        if not authorization:
            return ""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        name, _, password = base64.b64decode(value).decode().partition(":")
        user = self.users.get(name)
        if user and secrets.compare_digest(user.password, password):
            return name
        return None

    def token(self, name: str, scopes: list[str]) -> str:
        allowed = self.users[name].actions if name else []
        access = []
        for scope in scopes:
            kind, repo, actions = scope.split(":")  # repository:name:pull,push
            granted = [a for a in actions.split(",") if a in allowed]
            access.append({"type": kind, "name": repo, "actions": granted})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": name,
            "aud": SERVICE,
            "exp": now + self.expires_in,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        self.issued.append((name, scopes))
        return f"{signing_input}.{_b64(signature)}"


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, query: list[tuple[str, str]]) -> None:
            form = dict(query)
            if form.get("service") != SERVICE:
                self._send(400, {"errors": [{"message": f"unknown service {form.get('service')}"}]})
                return
            name = server.user_for(self.headers.get("Authorization"), form)
            if name is None:
                self._send(
                    401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
                )
                return
            scopes = [v for k, v in query if k == "scope"]
            token = server.token(name, scopes)
            self._send(
                200, {"token": token, "access_token": token, "expires_in": server.expires_in}
            )

        def do_GET(self) -> None:
            self._answer(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(urllib.parse.parse_qsl(self.rfile.read(length).decode()))

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Handler
