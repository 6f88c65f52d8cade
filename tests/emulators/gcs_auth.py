"""Google service-account auth on loopback: key files made here, and a token endpoint that
checks every JWT-bearer grant's RS256 signature against the registered public keys, the way
Google's does (the GCS emulator checks no token itself)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PROJECT = "test-project"
CLIENT_EMAIL = f"writer@{PROJECT}.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenServer:
    """Issues access tokens for JWT-bearer grants signed by a registered service account."""

    def __init__(self) -> None:
        self.public_keys: dict[str, rsa.RSAPublicKey] = {}
        self.issued: list[str] = []
        self.rejected = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                status, body = outer.grant(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def grant(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        def invalid(reason: str) -> tuple[int, dict[str, Any]]:
            self.rejected += 1
            return 400, {"error": "invalid_grant", "error_description": reason}

        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, {"error": "unsupported_grant_type"}
        try:
            header_b64, payload_b64, signature_b64 = form["assertion"][0].split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(payload_b64))
        except (KeyError, ValueError):
            return invalid("Invalid JWT.")
        key = self.public_keys.get(claims.get("iss", ""))
        if header.get("alg") != "RS256" or key is None:
            return invalid("Invalid grant: account not found")
        try:
            key.verify(
                _b64url_decode(signature_b64),
                f"{header_b64}.{payload_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return invalid("Invalid JWT Signature.")
        # google-auth addresses the assertion to Google's token endpoint whatever token_uri is
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or claims.get("exp", 0) < time.time():
            return invalid("Invalid JWT: audience or expiry.")
        token = secrets.token_urlsafe(24)
        self.issued.append(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def service_account_json(
    key: rsa.RSAPrivateKey,
    token_uri: str,
    *,
    project: str = PROJECT,
    client_email: str = CLIENT_EMAIL,
) -> str:
    """A service-account key file (JSON) for ``key``, fetching tokens from ``token_uri``."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": uuid.uuid4().hex,
            "private_key": pem,
            "client_email": client_email,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }
    )
