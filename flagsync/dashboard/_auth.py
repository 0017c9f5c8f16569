"""Who may use the dashboard: a bearer token for scripts, an HttpOnly cookie for pages,
and a CSRF token on every write a browser makes.

Both the cookie and the CSRF token are HMACs of the dashboard's secret, so nothing is
stored server-side and a restart keeps pages logged in. Without a token (loopback only,
see `check_config`) writes still need the CSRF token or a JSON body, so a web page in
the operator's browser cannot flip a flag through the dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

__all__ = ["COOKIE", "CSRF_FIELD", "CSRF_HEADER", "Access", "Guard", "read_form"]

COOKIE: Final = "flagsync_session"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"


@dataclass(frozen=True)
class Access:
    """How a request authenticated: `bearer`, `cookie`, or `open` (no token configured)."""

    how: str | None

    @property
    def allowed(self) -> bool:
        """True when the request may read."""
        return self.how is not None

    @property
    def needs_csrf(self) -> bool:
        """Browser-borne credentials need the CSRF token on writes; a bearer token does not."""
        return self.how in ("cookie", "open")


class Guard:
    """Checks credentials against one secret (None: no token, loopback only)."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        key = (secret or secrets.token_hex(32)).encode()
        self._session = hmac.new(key, b"flagsync-dashboard-session", hashlib.sha256).hexdigest()
        self.csrf = hmac.new(key, b"flagsync-dashboard-csrf", hashlib.sha256).hexdigest()

    def check(self, authorization: str | None, cookie: str | None) -> Access:
        """The access a request's Authorization header and session cookie give."""
        if self.secret is None:
            return Access("open")
        if authorization is not None:
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), self.secret.encode()
            ):
                return Access("bearer")
        if cookie is not None and hmac.compare_digest(cookie.encode(), self._session.encode()):
            return Access("cookie")
        return Access(None)

    def login(self, given: str) -> str | None:
        """The session cookie's value for a correct token, else None."""
        if self.secret is not None and hmac.compare_digest(given.encode(), self.secret.encode()):
            return self._session
        return None

    def csrf_ok(self, given: str | None) -> bool:
        """True when `given` is this dashboard's CSRF token."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


MAX_FORM_BYTES: Final = 64 * 1024


async def read_form(request: Any) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (what every page form sends) as a dict;
    parsed here so the dashboard needs no multipart library. Other bodies read as empty."""
    cached: dict[str, str] | None = request.scope.get("flagsync.form")
    if cached is not None:
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    body = await request.body()
    form: dict[str, str] = {}
    if content_type == "application/x-www-form-urlencoded" and len(body) <= MAX_FORM_BYTES:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.scope["flagsync.form"] = form
    return form
