"""Who may use the web inspector, and how every request proves it.

* Sign-in: a form takes a proxy key that carries the admin scope (``memstore keys create --admin``). The key is
  checked once; the browser then holds a session cookie, never the key.
* The session cookie is ``base64url(json{key id, session id, issued}) "." base64url(HMAC-SHA256)``, signed with the
  inspector's secret, HttpOnly, SameSite=Strict, Path=/ui (Secure over HTTPS). Every request re-reads the key
  row: revoking the key (or taking its admin scope away) ends its sessions at once. Sessions expire after
  ``max_age`` seconds; signing out ends one before that.
* CSRF: every form carries a per-session token (an HMAC of the session id); every POST must present it, and
  must come from this origin (``Origin``, else ``Referer``, and ``Sec-Fetch-Site`` when the browser sends them).
  The sign-in form is protected the same way, with a token tied to a short-lived pre-sign-in cookie.
* Every response gets a strict Content-Security-Policy (no inline script or style, nothing from elsewhere),
  ``frame-ancestors 'none'`` / X-Frame-Options DENY, nosniff, no-store and a same-origin referrer policy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "memstore_ui"
LOGIN_COOKIE = "memstore_ui_login"
SECRET_ENV = "MEMSTORE_UI_SECRET"
COOKIE_PATH = "/ui"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


class Refused(Exception):
    """The request may not go on: ``status`` and a message for the person (401, 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Session:
    """A signed-in browser: the admin key it signed in with, and the namespace that key is bound to."""

    key_id: str
    key_name: str
    key_prefix: str
    namespace: str | None  # None: every namespace
    session_id: str
    csrf: str

    def allows(self, namespace: str) -> bool:
        return self.namespace is None or self.namespace == namespace


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_from_env() -> bytes:
    """``MEMSTORE_UI_SECRET`` (sessions survive restarts and are shared by processes that set the same one),
    else a random secret for this process (signing in again after a restart)."""
    configured = os.environ.get(SECRET_ENV, "").strip()
    if configured:
        if len(configured) < 32:
            from memstore.errors import ConfigError

            raise ConfigError(f"{SECRET_ENV} must be at least 32 characters (e.g. python -c "
                              "'import secrets; print(secrets.token_urlsafe(32))')")
        return configured.encode("utf-8")
    return secrets.token_bytes(32)


class Sessions:
    """Signs and checks session cookies, CSRF tokens and the sign-in form's token."""

    def __init__(self, secret: bytes, max_age: float = 8 * 3600, login_max_age: float = 3600) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret
        self.max_age = max_age
        self.login_max_age = login_max_age
        self._ended: dict[str, float] = {}  # session id -> when it would have expired (signed out)
        self._lock = threading.Lock()

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}|{data}".encode(), hashlib.sha256).digest())

    # ---- the session cookie ------------------------------------------------------------------------
    def issue(self, key_id: str) -> tuple[str, str]:
        """A new session for a verified admin key: (cookie value, session id)."""
        sid = secrets.token_urlsafe(18)
        body = _b64(json.dumps({"k": key_id, "s": sid, "t": int(time.time())}, separators=(",", ":")).encode())
        return f"{body}.{self._mac('session', body)}", sid

    def read(self, cookie: str | None) -> tuple[str, str] | None:
        """(key id, session id) of a valid, unexpired, not signed-out cookie; else None."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1000:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(_unb64(body))
            key_id, sid, issued = str(data["k"]), str(data["s"]), float(data["t"])
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= time.time() - issued <= self.max_age:
            return None
        with self._lock:
            if sid in self._ended:
                return None
        return key_id, sid

    def end(self, sid: str) -> None:
        """Signs a session out (remembered until it would have expired anyway)."""
        now = time.time()
        with self._lock:
            self._ended = {s: t for s, t in self._ended.items() if t > now}
            self._ended[sid] = now + self.max_age

    def csrf(self, sid: str) -> str:
        return self._mac("csrf", sid)

    # ---- the sign-in form --------------------------------------------------------------------------
    def login_nonce(self) -> str:
        return f"{secrets.token_urlsafe(18)}.{int(time.time())}"

    def login_token(self, nonce: str) -> str:
        return self._mac("login", nonce)

    def login_ok(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token or "." not in nonce:
            return False
        try:
            issued = float(nonce.rsplit(".", 1)[1])
        except ValueError:
            return False
        return 0 <= time.time() - issued <= self.login_max_age and \
            hmac.compare_digest(token, self.login_token(nonce))


def same_origin(request: Request) -> bool:
    """A state-changing request must come from a page of this server: ``Sec-Fetch-Site`` (when sent) is
    same-origin, and ``Origin`` (else ``Referer``), when sent, names this host. Browsers send at least one of
    them with every form POST; a request with neither is no browser's cross-site request."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    host = (request.headers.get("host") or "").lower()
    for name in ("origin", "referer"):
        value = request.headers.get(name)
        if value is None:
            continue
        if value == "null":
            return False
        parts = urlsplit(value)
        return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host
    return True


def secure_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
