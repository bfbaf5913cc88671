"""The inspector's pages under ``/ui``: ``create_router(backend)`` returns a FastAPI router.

Reads are GET pages; every change is a POST form (CSRF token + same-origin check) answered by a redirect
back to the page it came from. Everything goes through the public ``Memory`` API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from memstore.adapters.ui.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Refused,
    Session,
    Sessions,
    clear_cookie,
    same_origin,
    secret_from_env,
    secure_headers,
    set_cookie,
)
from memstore.adapters.ui.inspector import HERE, PREFIX, BackendGetter, Inspector, safe_next, url
from starlette.responses import Response

from memstore.errors import InvalidInputError, NotFoundError
from memstore.messages import content_text

FormStr = Annotated[str, Form()]
STATIC = {"htmx.min.js": "text/javascript; charset=utf-8", "ui.js": "text/javascript; charset=utf-8",
          "ui.css": "text/css; charset=utf-8", "htmx.LICENSE": "text/plain; charset=utf-8"}
STATUSES = ("current", "invalid", "all")
MAX_ROWS = 500
ACTOR = "user"  # a person changed it by hand


def create_router(backend: BackendGetter, *, secret: bytes | None = None, max_age: float = 8 * 3600) -> APIRouter:
    """The inspector as a router to include in a FastAPI app. ``backend(request)`` gives the store, the keys
    and the worker; ``secret`` signs sessions (default: ``MEMSTORE_UI_SECRET``, else random per process)."""
    ui = Inspector(backend, Sessions(secret or secret_from_env(), max_age=max_age))
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    static = {name: (HERE / "static" / name).read_bytes() for name in STATIC}

    def mem(request: Request) -> Any:
        return backend(request).memory

    # ---- static files and signing in ----------------------------------------------------------------
    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in static:
            return secure_headers(Response("not found", status_code=404, media_type="text/plain"))
        resp = secure_headers(Response(static[name], media_type=STATIC[name]))
        resp.headers["Cache-Control"] = "public, max-age=3600"
        return resp

    @router.get("/login")
    def login_page(request: Request, next: str = "") -> Response:
        return _login_form(request, next)

    def _login_form(request: Request, next_path: str, error: str | None = None,
                    status_code: int = 200) -> Response:
        nonce = ui.sessions.login_nonce()
        resp = ui.render(request, "login.html", status_code, token=ui.sessions.login_token(nonce),
                         next=safe_next(next_path), error=error)
        set_cookie(resp, request, LOGIN_COOKIE, nonce, int(ui.sessions.login_max_age))
        return resp

    @router.post("/login")
    def login(request: Request, key: FormStr = "", token: FormStr = "", next: FormStr = "") -> Response:
        if not same_origin(request) or not ui.sessions.login_ok(request.cookies.get(LOGIN_COOKIE), token):
            return _login_form(request, next, "The sign-in form expired or did not come from this page; try again.",
                               403)
        row = backend(request).keys.verify(key.strip())
        if row is None:
            return _login_form(request, next, "That key is wrong or revoked.", 401)
        if not row.admin:
            return _login_form(request, next, "That key has no admin scope. Create one with `memstore keys create "
                                              "--name NAME --admin`.", 403)
        cookie, _sid = ui.sessions.issue(row.id)
        resp = ui.redirect(safe_next(next))
        set_cookie(resp, request, SESSION_COOKIE, cookie, int(ui.sessions.max_age))
        clear_cookie(resp, request, LOGIN_COOKIE)
        return resp

    @router.post("/logout")
    @ui.guarded
    def logout(request: Request, csrf: FormStr = "") -> Response:
        sess = ui.post_session(request, csrf)
        ui.sessions.end(sess.session_id)
        resp = ui.redirect(url("/login", done="signed-out"))
        clear_cookie(resp, request, SESSION_COOKIE)
        return resp

    # ---- users --------------------------------------------------------------------------------------
    @router.get("/")
    @ui.guarded
    def users(request: Request, q: str = "") -> Response:
        sess = ui.session(request)
        rows = [r for r in mem(request).users() if sess.allows(r["namespace"])]
        if q.strip():
            needle = q.strip().casefold()
            rows = [r for r in rows if needle in r["user_id"].casefold() or needle in r["namespace"].casefold()]
        return ui.render(request, "users.html", session=sess, rows=rows[:MAX_ROWS], total=len(rows), q=q)

    @router.get("/user")
    @ui.guarded
    def open_user(request: Request, user: str = "", ns: str = "") -> Response:
        user_id, namespace = ui.scope(ui.session(request), user, ns)
        return ui.redirect(url("/memories", user=user_id, ns=namespace))

    # ---- memories -----------------------------------------------------------------------------------
    @router.get("/memories")
    @ui.guarded
    def memories(request: Request, user: str = "", ns: str = "", q: str = "", kind: str = "",
                 status: str = "current") -> Response:
        from memstore import records

        sess = ui.session(request)
        user_id, namespace = ui.scope(sess, user, ns)
        m = mem(request)
        kinds = [k for k in records.KINDS if k != "episode"]
        kind = kind if kind in kinds else ""
        status = status if status in STATUSES else "current"
        if q.strip():
            hits = m.search(q, user_id, namespace, limit=50, include_invalid=status != "current",
                            filters={"kind": kind or kinds})
            rows = [(h.memory, h.score) for h in hits]
        else:
            rows = [(r, None) for r in m.get_all(user_id, namespace, include_invalid=status != "current",
                                                   kind=kind or None) if r.kind != "episode"]
            rows.reverse()  # newest first
        if status == "invalid":
            rows = [(r, s) for r, s in rows if r.invalid_at is not None]
        return ui.render(request, "memories.html", session=sess, user=user_id, ns=namespace, tab="memories",
                         rows=rows[:MAX_ROWS], total=len(rows), q=q, kind=kind, kinds=kinds, status=status,
                         statuses=STATUSES)

    def _owned(request: Request, sess: Session, memory_id: str, user: str, ns: str) -> tuple[Any, str, str]:
        user_id, namespace = ui.scope(sess, user, ns)
        rec = mem(request).get(memory_id, user_id=user_id)
        if rec.namespace != namespace:
            raise NotFoundError(f"no memory with id {memory_id!r}")
        return rec, user_id, namespace

    @router.get("/memory")
    @ui.guarded
    def memory(request: Request, id: str = "", user: str = "", ns: str = "") -> Response:
        from memstore import records

        sess = ui.session(request)
        user_id, namespace = ui.scope(sess, user, ns)
        m = mem(request)
        try:
            rec = m.get(id, user_id=user_id)
            if rec.namespace != namespace:
                rec = None
        except NotFoundError:
            rec = None
        try:
            events = [e for e in m.history(id, user_id=user_id) if e.namespace == namespace]
        except NotFoundError:
            events = []
        if rec is None and not events:
            raise NotFoundError(f"no memory with id {id!r} for user {user_id!r} in namespace {namespace!r}")
        return ui.render(request, "memory.html", session=sess, user=user_id, ns=namespace, tab="memories",
                         rec=rec, memory_id=id, events=list(reversed(events)), kinds=list(records.KINDS))

    @router.post("/memory/edit")
    @ui.guarded
    def memory_edit(request: Request, csrf: FormStr = "", id: FormStr = "", user: FormStr = "", ns: FormStr = "",
                    text: FormStr = "", kind: FormStr = "", pinned: FormStr = "", importance: FormStr = "") -> Response:
        sess = ui.post_session(request, csrf)
        rec, user_id, namespace = _owned(request, sess, id, user, ns)
        try:
            weight = float(importance) if importance.strip() else None
        except ValueError:
            raise InvalidInputError(f"importance must be a number between 0 and 1, not {importance!r}") from None
        new_text = text.strip()
        mem(request).update(id, new_text if new_text != rec.text else None, user_id=user_id, actor=ACTOR,
                            reason="edited in the web inspector", kind=kind or None, pinned=pinned == "on",
                            importance=weight)
        return ui.redirect(url("/memory", id=id, user=user_id, ns=namespace, done="edited"))

    @router.post("/memory/{action}")
    @ui.guarded
    def memory_action(request: Request, action: str, csrf: FormStr = "", id: FormStr = "", user: FormStr = "",
                      ns: FormStr = "", back: FormStr = "") -> Response:
        sess = ui.post_session(request, csrf)
        _rec, user_id, namespace = _owned(request, sess, id, user, ns)
        m = mem(request)
        if action == "invalidate":
            m.invalidate(id, user_id=user_id, actor=ACTOR, reason="marked no longer true in the web inspector")
        elif action == "restore":
            m.restore(id, user_id=user_id, actor=ACTOR)
        elif action == "delete":
            m.delete(id, user_id=user_id, actor=ACTOR, reason="deleted in the web inspector")
            return ui.redirect(url("/memories", user=user_id, ns=namespace, done="deleted"))
        else:
            raise NotFoundError(f"no such action: {action!r}")
        done = "invalidated" if action == "invalidate" else "restored"
        if back == "list":
            return ui.redirect(url("/memories", user=user_id, ns=namespace, status="all", done=done))
        return ui.redirect(url("/memory", id=id, user=user_id, ns=namespace, done=done))

    # ---- episodes (once memstore.records.KINDS has them) ---------------------------------------------
    @router.get("/episodes")
    @ui.guarded
    def episodes(request: Request, user: str = "", ns: str = "") -> Response:
        from memstore import records

        sess = ui.session(request)
        user_id, namespace = ui.scope(sess, user, ns)
        if "episode" not in records.KINDS:
            raise NotFoundError("this version of memstore stores no episodes")
        m = mem(request)
        every = list(reversed(m.get_all(user_id, namespace, kind="episode")))
        rows = every[:MAX_ROWS]
        return ui.render(request, "episodes.html", session=sess, user=user_id, ns=namespace, tab="episodes",
                         rows=rows, total=len(every), stale=m.store.stale_episodes(user_id, namespace, rows))

    # ---- custom instructions ------------------------------------------------------------------------
    @router.get("/instructions")
    @ui.guarded
    def instructions(request: Request, user: str = "", ns: str = "") -> Response:
        sess = ui.session(request)
        user_id, namespace = ui.scope(sess, user, ns)
        m = mem(request)
        return ui.render(request, "instructions.html", session=sess, user=user_id, ns=namespace, tab="instructions",
                         profile=m.profile(user_id, namespace), limit=m.config.max_instruction_chars)

    @router.post("/instructions")
    @ui.guarded
    def instructions_save(request: Request, csrf: FormStr = "", user: FormStr = "", ns: FormStr = "",
                          about_user: FormStr = "", response_style: FormStr = "") -> Response:
        sess = ui.post_session(request, csrf)
        user_id, namespace = ui.scope(sess, user, ns)
        mem(request).set_instructions(user_id, namespace, about_user=about_user, response_style=response_style,
                                      actor=ACTOR)
        return ui.redirect(url("/instructions", user=user_id, ns=namespace, done="saved"))

    @router.post("/instructions/undo")
    @ui.guarded
    def instructions_undo(request: Request, csrf: FormStr = "", user: FormStr = "", ns: FormStr = "",
                          back: FormStr = "") -> Response:
        sess = ui.post_session(request, csrf)
        user_id, namespace = ui.scope(sess, user, ns)
        mem(request).rules(user_id, namespace).undo(actor=ACTOR)
        return ui.redirect(url("/rules" if back == "rules" else "/instructions", user=user_id, ns=namespace,
                               done="undone"))

    # ---- style rules --------------------------------------------------------------------------------
    @router.get("/rules")
    @ui.guarded
    def rules(request: Request, user: str = "", ns: str = "") -> Response:
        sess = ui.session(request)
        user_id, namespace = ui.scope(sess, user, ns)
        m = mem(request)
        listed = m.rules(user_id, namespace).list()
        return ui.render(request, "rules.html", session=sess, user=user_id, ns=namespace, tab="rules",
                         active=[r for r in listed if r.status == "active"],
                         proposed=[r for r in listed if r.status == "proposed"],
                         compliance=m.compliance(user_id, namespace))

    @router.post("/rules/{action}")
    @ui.guarded
    def rules_action(request: Request, action: str, csrf: FormStr = "", user: FormStr = "", ns: FormStr = "",
                     id: FormStr = "", text: FormStr = "") -> Response:
        sess = ui.post_session(request, csrf)
        user_id, namespace = ui.scope(sess, user, ns)
        handle = mem(request).rules(user_id, namespace)
        if action == "add":
            handle.add(text, actor=ACTOR)
            done = "rule-added"
        elif action in ("accept", "reject", "remove"):
            getattr(handle, action)(id, actor=ACTOR)
            done = {"accept": "rule-accepted", "reject": "rule-rejected", "remove": "rule-removed"}[action]
        elif action in ("enable", "disable"):
            handle.enable(id, action == "enable", actor=ACTOR)
            done = f"rule-{action}d"
        else:
            raise NotFoundError(f"no such action: {action!r}")
        return ui.redirect(url("/rules", user=user_id, ns=namespace, done=done))

    # ---- the outbox ---------------------------------------------------------------------------------
    @router.get("/outbox")
    @ui.guarded
    def outbox(request: Request, user: str = "", ns: str = "", status: str = "failed") -> Response:
        from memstore.outbox import STATUSES as TURN_STATUSES

        sess = ui.session(request)
        user_id, namespace = ui.scope(sess, user, ns) if user else (None, ns or sess.namespace)
        if namespace is not None and not sess.allows(namespace):
            raise Refused(403, f"This key is bound to namespace {sess.namespace!r}; it cannot see {namespace!r}.")
        status = status if status in (*TURN_STATUSES, "all") else "failed"
        m = mem(request)
        turns = m.outbox.list(user_id=user_id, status=None if status == "all" else status, limit=2000)
        turns = [t for t in turns if (namespace is None or t.namespace == namespace) and sess.allows(t.namespace)]
        rows = [{"turn": t, "said": " / ".join(content_text(x.get("content")) for x in t.messages
                                               if isinstance(x, dict) and x.get("role") == "user")}
                for t in turns[:MAX_ROWS]]
        return ui.render(request, "outbox.html", session=sess, user=user_id, ns=namespace if user_id else None,
                         filter_ns=namespace, tab="outbox", rows=rows, total=len(turns), status=status,
                         statuses=("failed", "pending", "processing", "done", "skipped", "all"),
                         worker=backend(request).worker is not None)

    @router.post("/outbox/retry")
    @ui.guarded
    def outbox_retry(request: Request, csrf: FormStr = "", id: FormStr = "", user: FormStr = "",
                     ns: FormStr = "") -> Response:
        sess = ui.post_session(request, csrf)
        m = mem(request)
        turn = m.outbox.get(id)
        if not sess.allows(turn.namespace):
            raise NotFoundError(f"no turn with id {id!r}")
        m.outbox.retry(turn_ids=[turn.id])
        worker = backend(request).worker
        if worker is not None:
            worker.notify()
        back = {"user": turn.user_id, "ns": turn.namespace} if user else {"ns": ns or None}
        return ui.redirect(url("/outbox", **back, status="all" if user else "failed",
                               done="retried" if worker is not None else "retried-no-worker"))

    # ---- what would be injected --------------------------------------------------------------------
    @router.get("/preview")
    @ui.guarded
    def preview(request: Request, user: str = "", ns: str = "", message: str = "") -> Response:
        sess = ui.session(request)
        user_id, namespace = ui.scope(sess, user, ns)
        context = mem(request).context(user_id, message, namespace) if message.strip() else None
        return ui.render(request, "preview.html", session=sess, user=user_id, ns=namespace, tab="preview",
                         message=message, context=context, placement=mem(request).config.injection)

    return router
