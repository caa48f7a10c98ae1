"""HTTP protections for the read-only pages.

Ingest (`/api/v1/manifests*`) is authenticated by signatures only and is never put
behind page credentials: hosts must be able to deliver without them.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
SIGNATURE_AUTHENTICATED_PREFIXES = ("/api/v1/manifests",)


@dataclass(frozen=True)
class PageAuth:
    """Optional credentials for the pages: HTTP basic auth, a bearer token, or none."""

    basic_user: str | None = None
    basic_password: str | None = None
    bearer_token: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_token or (self.basic_user and self.basic_password))

    def allows(self, authorization: str) -> bool:
        scheme, value = authorization.partition(" ")[::2]
        scheme = scheme.lower()
        if scheme == "bearer" and self.bearer_token:
            return hmac.compare_digest(value.strip().encode(), self.bearer_token.encode())
        if scheme == "basic" and self.basic_user and self.basic_password:
            try:
                user, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")[::2]
            except (ValueError, UnicodeDecodeError):
                return False
            return hmac.compare_digest(user.encode(), self.basic_user.encode()) & hmac.compare_digest(
                password.encode(), self.basic_password.encode()
            )
        return False


class PageProtection:
    """ASGI middleware: security headers on every answer, credentials on every page."""

    def __init__(self, app: ASGIApp, auth: PageAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._needs_credentials(scope) and not self.auth.allows(_header(scope, b"authorization")):
            await _unauthorized(send, basic=bool(self.auth.basic_user))
            return
        await self.app(scope, receive, _with_security_headers(send))

    def _needs_credentials(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        return self.auth.enabled and not path.startswith(SIGNATURE_AUTHENTICATED_PREFIXES)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _with_security_headers(send: Send) -> Callable[[Message], Awaitable[None]]:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return send_with_headers


async def _unauthorized(send: Send, *, basic: bool) -> None:
    challenge = b'Basic realm="bk reporter"' if basic else b'Bearer realm="bk reporter"'
    body = b"authentication required\n"
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"www-authenticate", challenge),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
