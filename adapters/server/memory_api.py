"""The proxy's memory API: what a user's app needs to show and edit what is remembered (ChatGPT's
"manage memories" screen), as JSON under ``/v1/memory``.

Every route is scoped by the caller's proxy key: the namespace is the key's binding, else the
``X-Memstore-Namespace`` header or ``?namespace=``, else the server default. A memory addressed by id that
lives in another namespace (or, with ``X-Memstore-User``, belongs to another user) is a 404, exactly as if it
did not exist. Lists are paginated with ``limit`` / ``offset`` and say ``has_more`` and ``next_offset``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from memstore.adapters.server.limits import ApiError, read_json
from memstore.adapters.server.state import USER_HEADER, Scope, authorize, header, run, state_of
from starlette.responses import JSONResponse, Response

from memstore.errors import InvalidInputError, NotFoundError
from memstore.records import MemoryRecord, StyleRule, normalize_text
from memstore.validate import check_scope

router = APIRouter(prefix="/v1/memory")
MAX_LIMIT = 1000


# ---- JSON shapes ------------------------------------------------------------------------------------

def memory_json(rec: MemoryRecord) -> dict[str, Any]:
    d = rec.model_dump(mode="json", exclude={"pk", "indexed"})
    d["metadata"] = d.pop("meta")
    return {"object": "memory", **d}


def rule_json(rule: StyleRule) -> dict[str, Any]:
    return {"object": "rule", **rule.model_dump(mode="json", exclude={"pk"})}


def page(data: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """``data`` holds up to limit + 1 items: the extra one only says there are more."""
    more = len(data) > limit
    return {"object": "list", "data": data[:limit], "limit": limit, "offset": offset, "has_more": more,
            "next_offset": offset + limit if more else None}


def _flag(params: Any, name: str) -> bool:
    """A yes/no parameter of a query string or a JSON body: 1, true or yes (any case) is yes."""
    return str(params.get(name, "false")).lower() in ("1", "true", "yes")


def _user(user_id: str) -> str:
    try:
        return check_scope(user_id, "default")[0]
    except InvalidInputError as exc:
        raise ApiError(400, f"invalid user id: {exc}", param="user_id") from None


async def _body(request: Request) -> dict[str, Any]:
    return await read_json(request, state_of(request).settings.max_body_bytes)


async def _scoped_memory(request: Request, scope: Scope, memory_id: str) -> MemoryRecord:
    """The memory if it is in the caller's namespace (and user, when X-Memstore-User is sent); else 404."""
    mem = state_of(request).memory
    try:
        rec = await run(mem.get, memory_id)
    except NotFoundError:
        rec = None
    user = header(request, USER_HEADER) or request.query_params.get("user_id")
    if rec is None or rec.namespace != scope.namespace or (user and rec.user_id != user):
        raise ApiError(404, f"no memory with id {memory_id!r}", param="memory_id", code="not_found")
    return rec


# ---- memories ---------------------------------------------------------------------------------------

@router.get("/users")
async def list_users(request: Request, limit: int = Query(100, ge=1, le=MAX_LIMIT),
                     offset: int = Query(0, ge=0)) -> Response:
    scope = await authorize(request)
    rows = await run(state_of(request).memory.users)
    mine = [{"object": "user", **r} for r in rows if r.get("namespace") == scope.namespace]
    return JSONResponse(_jsonable(page(mine[offset:offset + limit + 1], limit, offset)))


@router.get("/users/{user_id}/memories")
async def list_memories(request: Request, user_id: str, limit: int = Query(100, ge=1, le=MAX_LIMIT),
                        offset: int = Query(0, ge=0), kind: str | None = None,
                        include_invalid: bool = False) -> Response:
    scope = await authorize(request)
    recs = await run(state_of(request).memory.get_all, _user(user_id), scope.namespace, include_invalid,
                     kind=kind, limit=limit + 1, offset=offset)
    return JSONResponse(page([memory_json(r) for r in recs], limit, offset))


@router.post("/users/{user_id}/memories")
async def add_memories(request: Request, user_id: str) -> Response:
    """``{"text": ...}`` stores one memory verbatim; ``{"messages": [...], "infer": true}`` runs extraction.
    Optional: kind, pinned, importance, metadata."""
    scope = await authorize(request)
    body = await _body(request)
    user = _user(user_id)
    text, messages = body.get("text"), body.get("messages")
    if (text is None) == (messages is None):
        raise ApiError(400, "give either 'text' or 'messages'", param="text")
    infer = body.get("infer", False)
    if not isinstance(infer, bool):
        raise ApiError(400, "'infer' must be a boolean", param="infer")
    payload = text if text is not None else messages
    if text is not None and not isinstance(text, str):
        raise ApiError(400, "'text' must be a string", param="text")
    kwargs: dict[str, Any] = {"kind": body.get("kind", "fact"), "pinned": bool(body.get("pinned", False)),
                              "importance": body.get("importance", 0.5)}
    if not isinstance(kwargs["importance"], int | float) or not 0 <= kwargs["importance"] <= 1:
        raise ApiError(400, "'importance' must be a number between 0 and 1", param="importance")
    ops = await run(state_of(request).memory.add, payload, user, scope.namespace, infer, body.get("metadata"),
                    **kwargs)
    data = [{"object": "memory.operation", "event": op.event, "reason": op.reason,
             "memory": memory_json(op.memory) if op.memory else None} for op in ops]
    status = 201 if any(op.event == "ADD" for op in ops) else 200
    return JSONResponse({"object": "list", "data": data}, status_code=status)


async def _search(request: Request, user_id: str, params: dict[str, Any]) -> Response:
    scope = await authorize(request)
    query = params.get("query", params.get("q"))
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "give a non-empty 'query'", param="query")
    try:
        limit = int(params.get("limit", 10))
        offset = int(params.get("offset", 0))
    except (TypeError, ValueError):
        raise ApiError(400, "'limit' and 'offset' must be integers", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ApiError(400, f"'limit' must be 1..{MAX_LIMIT} and 'offset' >= 0", param="limit")
    hits = await run(state_of(request).memory.search, query, _user(user_id), scope.namespace, offset + limit + 1,
                     include_invalid=_flag(params, "include_invalid"), episodes=_flag(params, "episodes"))
    data = [{"object": "memory.search_result", "score": h.score, "sources": h.sources, "memory": memory_json(h.memory)}
            for h in hits[offset:]]
    return JSONResponse(page(data, limit, offset))


@router.post("/users/{user_id}/memories/search")
async def search_post(request: Request, user_id: str) -> Response:
    """``{"query": ..., "limit": 10, "offset": 0, "include_invalid": false}``: best first."""
    return await _search(request, user_id, await _body(request))


@router.get("/users/{user_id}/memories/search")
async def search_get(request: Request, user_id: str) -> Response:
    return await _search(request, user_id, dict(request.query_params))


@router.get("/memories/{memory_id}")
async def get_memory(request: Request, memory_id: str) -> Response:
    scope = await authorize(request)
    return JSONResponse(memory_json(await _scoped_memory(request, scope, memory_id)))


@router.patch("/memories/{memory_id}")
async def update_memory(request: Request, memory_id: str) -> Response:
    """Any of text, kind, pinned, importance, metadata, reason. The old text stays in history."""
    scope = await authorize(request)
    body = await _body(request)
    allowed = {"text", "kind", "pinned", "importance", "metadata", "reason"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown fields {unknown}; allowed: {sorted(allowed)}", param=unknown[0])
    rec = await _scoped_memory(request, scope, memory_id)
    updated = await run(state_of(request).memory.update, rec.id, body.get("text"), user_id=rec.user_id, **{
        k: body[k] for k in ("kind", "pinned", "importance", "metadata", "reason") if k in body})
    return JSONResponse(memory_json(updated))


@router.delete("/memories/{memory_id}")
async def delete_memory(request: Request, memory_id: str) -> Response:
    scope = await authorize(request)
    rec = await _scoped_memory(request, scope, memory_id)
    await run(state_of(request).memory.delete, rec.id, user_id=rec.user_id)
    return JSONResponse({"id": rec.id, "object": "memory.deleted", "deleted": True})


@router.get("/memories/{memory_id}/history")
async def memory_history(request: Request, memory_id: str) -> Response:
    scope = await authorize(request)
    rec = await _scoped_memory(request, scope, memory_id)
    events = await run(state_of(request).memory.history, rec.id, user_id=rec.user_id)
    return JSONResponse({"object": "list", "data": [
        {"object": "memory.event", **e.model_dump(mode="json", exclude={"pk"})} for e in events
        if e.namespace == scope.namespace]})


# ---- instructions and rules -------------------------------------------------------------------------

def _profile_json(p: Any) -> dict[str, Any]:
    return {"object": "instructions", "user_id": p.user_id, "namespace": p.namespace, "about_user": p.about_user,
            "response_style": p.response_style, "version": p.version,
            "updated_at": p.updated_at.isoformat() if p.updated_at else None}


@router.get("/users/{user_id}/instructions")
async def get_instructions(request: Request, user_id: str) -> Response:
    scope = await authorize(request)
    return JSONResponse(_profile_json(await run(state_of(request).memory.profile, _user(user_id), scope.namespace)))


async def _set_instructions(request: Request, user_id: str, replace: bool) -> Response:
    scope = await authorize(request)
    body = await _body(request)
    unknown = sorted(set(body) - {"about_user", "response_style"})
    if unknown:
        raise ApiError(400, f"unknown fields {unknown}; allowed: about_user, response_style", param=unknown[0])
    fields = {k: body.get(k, "" if replace else None) for k in ("about_user", "response_style")}
    if all(v is None for v in fields.values()):
        raise ApiError(400, "give about_user and/or response_style", param="about_user")
    profile = await run(state_of(request).memory.set_instructions, _user(user_id), scope.namespace, **fields)
    return JSONResponse(_profile_json(profile))


@router.put("/users/{user_id}/instructions")
async def put_instructions(request: Request, user_id: str) -> Response:
    """Sets both fields (a missing one is cleared)."""
    return await _set_instructions(request, user_id, replace=True)


@router.patch("/users/{user_id}/instructions")
async def patch_instructions(request: Request, user_id: str) -> Response:
    """Sets the fields given, leaves the other alone."""
    return await _set_instructions(request, user_id, replace=False)


@router.get("/users/{user_id}/rules")
async def list_rules(request: Request, user_id: str) -> Response:
    scope = await authorize(request)
    rules = await run(lambda: state_of(request).memory.rules(_user(user_id), scope.namespace).list())
    return JSONResponse({"object": "list", "data": [rule_json(r) for r in rules]})


def _rule_spec(item: Any, where: str) -> tuple[str, str | None, dict[str, Any] | None]:
    if isinstance(item, str):
        return item, None, None
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise ApiError(400, f"{where} must be a string or an object with 'text'", param=where)
    params = item.get("params")
    if params is not None and not isinstance(params, dict):
        raise ApiError(400, f"{where}.params must be an object", param=where)
    return item["text"], item.get("checker"), params


@router.post("/users/{user_id}/rules")
async def add_rule(request: Request, user_id: str) -> Response:
    """``{"text": "never use emoji", "checker": optional, "params": optional}``."""
    scope = await authorize(request)
    text, checker, params = _rule_spec(await _body(request), "body")
    handle = state_of(request).memory.rules(_user(user_id), scope.namespace)
    rule = await run(handle.add, text, checker, params)
    return JSONResponse(rule_json(rule), status_code=201)


@router.put("/users/{user_id}/rules")
async def replace_rules(request: Request, user_id: str) -> Response:
    """``{"rules": [...]}``: the user's rules become exactly these (by wording); undo restores the old set."""
    scope = await authorize(request)
    body = await _body(request)
    items = body.get("rules")
    if not isinstance(items, list):
        raise ApiError(400, "'rules' must be an array", param="rules")
    specs = [_rule_spec(it, f"rules[{i}]") for i, it in enumerate(items)]
    handle = state_of(request).memory.rules(_user(user_id), scope.namespace)

    def apply() -> list[StyleRule]:
        wanted = {normalize_text(t) for t, _c, _p in specs}
        for rule in handle.list():
            if normalize_text(rule.text) not in wanted:
                handle.remove(rule.id)
        for text, checker, params in specs:
            handle.add(text, checker, params)
        return handle.list()

    return JSONResponse({"object": "list", "data": [rule_json(r) for r in await run(apply)]})


@router.patch("/users/{user_id}/rules/{rule_id}")
async def patch_rule(request: Request, user_id: str, rule_id: str) -> Response:
    """``{"enabled": bool}`` or ``{"status": "active" | "rejected"}`` (accept / reject a proposal)."""
    scope = await authorize(request)
    body = await _body(request)
    handle = state_of(request).memory.rules(_user(user_id), scope.namespace)
    rule: StyleRule | None = None
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise ApiError(400, "'enabled' must be a boolean", param="enabled")
        rule = await run(handle.enable, rule_id, body["enabled"])
    if "status" in body:
        action = {"active": handle.accept, "rejected": handle.reject}.get(body["status"])
        if action is None:
            raise ApiError(400, "'status' must be 'active' or 'rejected'", param="status")
        rule = await run(action, rule_id)
    if rule is None:
        raise ApiError(400, "give 'enabled' and/or 'status'", param="enabled")
    return JSONResponse(rule_json(rule))


@router.delete("/users/{user_id}/rules/{rule_id}")
async def delete_rule(request: Request, user_id: str, rule_id: str) -> Response:
    scope = await authorize(request)
    handle = state_of(request).memory.rules(_user(user_id), scope.namespace)
    rule = await run(handle.remove, rule_id)
    return JSONResponse({"id": rule.id, "object": "rule.deleted", "deleted": True})


@router.post("/users/{user_id}/rules/undo")
async def undo_rules(request: Request, user_id: str) -> Response:
    """Restores instructions and rules as they were before the last change."""
    scope = await authorize(request)
    handle = state_of(request).memory.rules(_user(user_id), scope.namespace)
    profile = await run(handle.undo)
    return JSONResponse({**_profile_json(profile), "rules": [rule_json(r) for r in profile.rules]})


@router.get("/users/{user_id}/compliance")
async def compliance(request: Request, user_id: str) -> Response:
    scope = await authorize(request)
    rows = await run(state_of(request).memory.compliance, _user(user_id), scope.namespace)
    return JSONResponse(_jsonable({"object": "list", "data": rows}))


@router.post("/users/{user_id}/context")
async def context(request: Request, user_id: str) -> Response:
    """``{"messages": [...]}``: the block a chat request would get injected, without calling a model."""
    scope = await authorize(request)
    body = await _body(request)
    ctx = await run(state_of(request).memory.context, _user(user_id), body.get("messages") or "", scope.namespace,
                    token_budget=body.get("token_budget"))
    return JSONResponse({"object": "memory.context", "system_block": ctx.system_block, **ctx.summary()})


# ---- forget and export ------------------------------------------------------------------------------

def _all_namespaces(request: Request, scope: Scope) -> bool:
    if not _flag(request.query_params, "all_namespaces"):
        return False
    if scope.bound:
        raise ApiError(403, "a key bound to a namespace cannot act on all namespaces", param="all_namespaces",
                       code="namespace_forbidden")
    return True


@router.delete("/users/{user_id}")
async def forget_user(request: Request, user_id: str) -> Response:
    """Deletes everything stored about the user in the namespace (``?all_namespaces=true``: everywhere;
    unbound keys only)."""
    scope = await authorize(request)
    ns = None if _all_namespaces(request, scope) else scope.namespace
    counts = await run(state_of(request).memory.forget, _user(user_id), ns)
    return JSONResponse({"object": "user.forgotten", "user_id": user_id, "namespace": ns, "deleted": counts})


@router.get("/users/{user_id}/export")
async def export_user(request: Request, user_id: str) -> Response:
    """Everything stored about the user, in ``memstore import``'s format."""
    scope = await authorize(request)
    ns = None if _all_namespaces(request, scope) else scope.namespace
    return JSONResponse(await run(state_of(request).memory.export, _user(user_id), ns))


def _jsonable(data: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(data)
