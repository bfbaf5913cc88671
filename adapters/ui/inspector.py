"""The inspector's machinery shared by its pages: the store it looks at, sessions and scopes, rendering.

Pages are rendered on the server by Jinja2 with autoescape on: stored text (memories, instructions, rules,
turns, errors) only ever reaches the page as escaped text. Responses always carry the security headers of
``auth.secure_headers``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from memstore.adapters.ui.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Refused,
    Session,
    Sessions,
    clear_cookie,
    same_origin,
    secure_headers,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from memstore.errors import InvalidInputError, MemstoreError, NotFoundError
from memstore.validate import check_scope

if TYPE_CHECKING:
    from memstore.adapters.server.keys import KeyStore

    from memstore.memory import Memory
    from memstore.worker import Worker

log = logging.getLogger("memstore.ui")
P = ParamSpec("P")
HERE = Path(__file__).parent
PREFIX = "/ui"

# what a redirect after a change says (``?done=CODE``): fixed texts, never text from the request
DONE = {
    "saved": "Saved.",
    "edited": "Memory updated; the old text is in its history.",
    "invalidated": "Memory marked as no longer true. It stays in its history and can be restored.",
    "restored": "Memory restored.",
    "deleted": "Memory deleted. Its history is kept.",
    "undone": "The last change to the instructions and rules was undone.",
    "rule-added": "Rule added.",
    "rule-accepted": "Proposed rule accepted: it is injected from now on.",
    "rule-rejected": "Proposed rule rejected.",
    "rule-enabled": "Rule enabled.",
    "rule-disabled": "Rule disabled.",
    "rule-removed": "Rule removed.",
    "retried": "The turn is back in the outbox; the extraction worker picks it up.",
    "retried-no-worker": "The turn is back in the outbox. No extraction worker runs in this process: run "
                         "`memstore turns retry` or a worker process to extract it.",
    "signed-out": "Signed out.",
}


@dataclass
class UiBackend:
    """What the inspector looks at: a store, its proxy keys, and the worker (if any) that extracts
    retried turns in this process."""

    memory: Memory
    keys: KeyStore
    worker: Worker | None = None


BackendGetter = Callable[[Request], UiBackend]


def url(path: str, **params: Any) -> str:
    """A URL inside the inspector with its query parameters encoded (empty ones left out)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{PREFIX}{path}" + (f"?{query}" if query else "")


def when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M")


def clip(text: str | None, limit: int = 160) -> str:
    one = " ".join((text or "").split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def make_templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(url=url, when=when, clip=clip)
    return env


class Inspector:
    """Holds the sessions and templates of one router; resolves the backend per request."""

    def __init__(self, backend: BackendGetter, sessions: Sessions) -> None:
        self.backend = backend
        self.sessions = sessions
        self.templates = make_templates()

    # ---- who is asking ---------------------------------------------------------------------------------
    def session(self, request: Request) -> Session:
        """The signed-in admin key of this request; Refused(401) when there is none (or it was revoked)."""
        found = self.sessions.read(request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise Refused(401, "Sign in with an admin key.")
        key_id, sid = found
        keys = self.backend(request).keys
        try:
            row = keys.find(key_id)
        except (NotFoundError, InvalidInputError):
            row = None
        if row is None or row.id != key_id or not row.active or not row.admin:
            raise Refused(401, "This session's key was revoked or lost its admin scope: sign in again.")
        return Session(key_id=row.id, key_name=row.name, key_prefix=row.prefix, namespace=row.namespace,
                       session_id=sid, csrf=self.sessions.csrf(sid))

    def post_session(self, request: Request, csrf: str) -> Session:
        """A state-changing request: signed in, from this origin, with the session's CSRF token."""
        if not same_origin(request):
            raise Refused(403, "Refused: this request did not come from the inspector's own pages.")
        sess = self.session(request)
        import hmac

        if not csrf or not hmac.compare_digest(csrf, sess.csrf):
            raise Refused(403, "Refused: the form's security token is missing or stale. Reload the page and try "
                               "again.")
        return sess

    @staticmethod
    def scope(sess: Session, user: str | None, ns: str | None) -> tuple[str, str]:
        """A (user, namespace) the session may see; 400 when invalid, 403 outside the key's namespace."""
        namespace = ns or sess.namespace or "default"
        user_id, namespace = check_scope(user or "", namespace)
        if not sess.allows(namespace):
            raise Refused(403, f"This key is bound to namespace {sess.namespace!r}; it cannot see {namespace!r}.")
        return user_id, namespace

    # ---- responses ----------------------------------------------------------------------------------
    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        from memstore import records

        context.setdefault("session", None)
        context.setdefault("episodes", "episode" in records.KINDS)
        done = request.query_params.get("done")
        context.setdefault("flash", DONE.get(done or ""))
        html = self.templates.get_template(template).render(request=request, **context)
        return secure_headers(HTMLResponse(html, status_code=status_code))

    @staticmethod
    def redirect(location: str) -> Response:
        return secure_headers(RedirectResponse(location, status_code=303))

    def refused(self, request: Request, exc: Refused) -> Response:
        if exc.status == 401:
            if request.method == "GET":
                target = url("/login", next=_local_path(request))
                if request.headers.get("hx-request"):
                    resp = secure_headers(Response(status_code=200))
                    resp.headers["HX-Redirect"] = target
                else:
                    resp = self.redirect(target)
            else:
                resp = self.render(request, "error.html", 401, title="Not signed in", message=exc.message)
            clear_cookie(resp, request, SESSION_COOKIE)
            return resp
        return self.render(request, "error.html", exc.status, title="Refused", message=exc.message)

    def guarded(self, fn: Callable[P, Response]) -> Callable[P, Response]:
        """Turns refusals and memstore errors of a page into HTML pages with the right status."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            request = kwargs.get("request")
            assert isinstance(request, Request)
            try:
                return fn(*args, **kwargs)
            except Refused as exc:
                return self.refused(request, exc)
            except NotFoundError as exc:
                return self.render(request, "error.html", 404, title="Not found", message=str(exc),
                                   session=_maybe(self, request))
            except InvalidInputError as exc:
                return self.render(request, "error.html", 400, title="Cannot do that", message=str(exc),
                                   session=_maybe(self, request))
            except MemstoreError as exc:
                log.warning("memstore ui: %s", exc)
                return self.render(request, "error.html", 503, title="The store failed",
                                   message=f"{type(exc).__name__}; the server log has the details.",
                                   session=_maybe(self, request))

        return wrapper


def _maybe(inspector: Inspector, request: Request) -> Session | None:
    try:
        return inspector.session(request)
    except Exception:
        return None


def _local_path(request: Request) -> str:
    path = request.url.path
    return path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path inside the inspector only (never another site)."""
    if not value or not value.startswith(PREFIX + "/") or value.startswith("//") or "\\" in value \
            or any(ord(c) < 32 for c in value):
        return PREFIX + "/"
    return value


__all__ = ["DONE", "LOGIN_COOKIE", "PREFIX", "BackendGetter", "Inspector", "UiBackend", "safe_next", "url"]
