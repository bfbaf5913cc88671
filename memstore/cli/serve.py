"""The ``memstore serve`` command and the ``memstore keys`` group (create / list / revoke).

Cheap to import: fastapi, uvicorn, litellm and torch load only when a command runs. The CLI registers them
as ``app.command("serve")(serve)`` and ``app.add_typer(keys_app, name="keys")``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from memstore.cli.common import dumps, fail, state

HOME_HELP = "memstore home (database and index); default: the global --home, else $MEMSTORE_HOME or ~/.memstore."
LOG_LEVELS = ("debug", "info", "warning", "error")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8765,
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    upstream_base_url: Annotated[str | None, typer.Option(
        envvar="MEMSTORE_UPSTREAM_BASE_URL",
        help="OpenAI-compatible base URL of the real model server. Unset: litellm routes by model name "
             "using its provider env vars (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...).")] = None,
    upstream_api_key: Annotated[str | None, typer.Option(
        envvar="MEMSTORE_UPSTREAM_API_KEY", help="API key for the upstream; it never leaves the server.")] = None,
    upstream_timeout: Annotated[float, typer.Option(help="Seconds to wait for the upstream.", min=0.001)] = 600.0,
    upstream_max_retries: Annotated[int, typer.Option(help="Retries of failed upstream calls.", min=0)] = 2,
    namespace: Annotated[str, typer.Option(help="Namespace of requests that name none.")] = "default",
    auth: Annotated[bool, typer.Option(
        "--auth/--no-auth",
        help="Require a proxy key (memstore keys create). --no-auth: local development only.")] = True,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 above).",
                                                min=1)] = 4 * 1024 * 1024,
    max_messages: Annotated[int, typer.Option(help="Most messages one chat request may carry (400 above).",
                                              min=1)] = 1000,
    rate_limit: Annotated[float, typer.Option(help="Requests per second per key (token bucket); 0: off.",
                                              min=0)] = 20.0,
    rate_burst: Annotated[float | None, typer.Option(help="Bucket size (at least 1); default 2 x --rate-limit.",
                                                     min=1)] = None,
    worker: Annotated[bool, typer.Option(
        "--worker/--no-worker",
        help="Run background extraction in the server (else in a separate worker process).")] = True,
    extractor: Annotated[str | None, typer.Option(
        help="llm or heuristic (default: MEMSTORE_EXTRACTOR or llm).")] = None,
    extract_model: Annotated[str | None, typer.Option(
        help="Model for extraction (default MEMSTORE_LLM_MODEL); it goes to the upstream unless "
             "MEMSTORE_LLM_API_BASE says otherwise.")] = None,
    enforce_rules: Annotated[bool, typer.Option(
        "--enforce-rules", help="One corrective retry when a reply breaks a checkable rule.")] = False,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Fail requests when the memory layer fails (default: fail open).")] = False,
    model: Annotated[list[str] | None, typer.Option(
        help="A model clients may use (repeatable); listed by /v1/models. Default: any.")] = None,
    allow_param: Annotated[list[str] | None, typer.Option(
        help="A non-OpenAI body parameter to pass upstream (repeatable), e.g. top_k.")] = None,
    passthrough: Annotated[list[str] | None, typer.Option(
        metavar="PREFIX",
        help="A /v1 path prefix passed through to the --upstream-base-url as it is (repeatable; replaces the "
             "default: embeddings, moderations, completions, audio, images). 'responses' and 'conversations' "
             "(stored objects, reachable by id from any key: one-tenant servers only), '*' for all, 'none' for "
             "nothing.")] = None,
    threads: Annotated[int, typer.Option(help="Worker threads for storage and embedding.", min=1)] = 16,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the OpenAI-compatible proxy: any OpenAI SDK gets memory by pointing base_url here.

    Clients send a proxy key as their API key, the user as OpenAI's `user` field or an X-Memstore-User
    header, and optionally X-Memstore-Namespace. Endpoints: /v1/chat/completions, /v1/responses, /v1/models,
    /v1/memory/..., /ui (the web inspector), /healthz, /metrics; other /v1 paths are passed through
    (--passthrough) or answered with a 404 that lists what is served.
    """
    from memstore.cli.common import check_extractor

    extractor = check_extractor(extractor)
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}", 2)
    namespace = _checked_namespace(namespace)
    home = _home(home)
    try:
        from memstore.adapters.server.app import run_server
        from memstore.adapters.server.state import ServerSettings
    except ImportError as exc:  # fastapi / uvicorn missing
        typer.echo(f"memstore serve needs the server extra: pip install 'memstore[server]' ({exc})", err=True)
        raise typer.Exit(1) from None
    _check_config(home, extractor)  # a bad MEMSTORE_* variable: one line now, not a traceback at startup
    passthrough_kw = {} if passthrough is None else {"passthrough": _checked_passthrough(passthrough)}
    settings = ServerSettings(
        home=home, upstream_base_url=upstream_base_url, upstream_api_key=upstream_api_key,
        upstream_timeout=upstream_timeout, upstream_max_retries=upstream_max_retries, namespace=namespace,
        auth=auth, max_body_bytes=max_body_bytes, max_messages=max_messages, rate_limit=rate_limit,
        rate_burst=rate_burst, worker=worker, extractor=extractor, extract_model=extract_model,
        enforce_rules=enforce_rules, strict=strict, models=list(model or []), allow_params=list(allow_param or []),
        threads=threads, **passthrough_kw,
    )
    run_server(settings, host=host, port=port, log_level=log_level.lower())


def _checked_passthrough(prefixes: list[str]) -> list[str]:
    """--passthrough values as path prefixes under /v1 ("none" alone: nothing is passed through)."""
    if [p.strip().lower() for p in prefixes] == ["none"]:
        return []
    out = []
    for raw in prefixes:
        p = raw.strip().strip("/")
        if p.startswith("v1/"):
            p = p[3:]
        if not p or p.lower() == "none" or (p != "*" and not all(part and part.replace("_", "").replace("-", "")
                                                                   .isalnum() for part in p.split("/"))):
            fail(f"--passthrough {raw!r}: give a path prefix under /v1 such as 'embeddings' or 'audio/speech', "
                 "'*' for every path, or 'none' alone", 2)
        if p == "memory" or p.startswith("memory/"):
            fail("--passthrough: /v1/memory is memstore's own API and is never passed through", 2)
        out.append(p)
    return out


def _home(home: str | None) -> str | None:
    """The command's --home, else the global one (``memstore --home DIR serve``)."""
    if home:
        return home
    global_home = state().home
    return str(global_home) if global_home is not None else None


def _checked_namespace(namespace: str) -> str:
    from memstore.errors import InvalidInputError
    from memstore.validate import check_scope

    try:
        return check_scope("user", namespace)[1]
    except InvalidInputError as exc:
        fail(f"--namespace: {exc}", 2)


def _check_config(home: str | None, extractor: str | None) -> None:
    from memstore.cli.common import config

    overrides: dict[str, Any] = {}
    if home:
        overrides["home"] = home
    if extractor:
        overrides["extractor"] = extractor
    config(**overrides)


keys_app = typer.Typer(help="Proxy keys for `memstore serve`: create, list, revoke.", no_args_is_help=True)


def _store(home: str | None):  # type: ignore[no-untyped-def]
    from memstore.adapters.server.keys import open_keys

    return open_keys(home=_home(home))


def _key_json(row: Any) -> dict[str, Any]:
    """A key's public fields, timestamps in ISO 8601 (UTC)."""
    return json.loads(dumps({k: _iso(v) for k, v in row.public_dict().items()}))


def _iso(value: Any) -> Any:
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label: which app or person uses the key.")],
    namespace: Annotated[str | None, typer.Option(
        help="Bind the key to this namespace: it cannot read or write any other.")] = None,
    admin: Annotated[bool, typer.Option(
        "--admin", help="The key may also sign in to the web inspector (/ui): see and edit every user's memories "
                        "(of its namespace, when bound to one).")] = False,
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a proxy key. The key is printed once and only its hash is stored: copy it now."""
    from memstore.errors import MemstoreError

    try:
        row, key = _store(home).create(name, namespace, admin=admin)
    except MemstoreError as exc:  # a bad name or namespace: a usage error
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({**_key_json(row), "key": key}))
        return
    typer.echo(key)
    bound = f", bound to namespace {row.namespace!r}" if row.namespace else ""
    bound += ", admin: may sign in to /ui" if row.admin else ""
    typer.echo(f"created key {row.prefix} ({row.name}{bound}). It is shown only this once; store it safely.",
               err=True)


@keys_app.command("list")
def keys_list(
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    include_revoked: Annotated[bool, typer.Option("--all/--active", help="Include revoked keys.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List proxy keys (prefix, name, namespace, admin, created, last used, revoked). Secrets are never shown."""
    rows = _store(home).list(include_revoked)
    if as_json:
        typer.echo(json.dumps([_key_json(r) for r in rows]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("prefix", "name", "namespace", "admin", "created", "last used", "revoked")
    for r in rows:
        table.add_row(r.prefix, r.name, r.namespace or "(any)", "yes" if r.admin else "", _when(r.created_at),
                      _when(r.last_used_at), _when(r.revoked_at))
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's prefix, id, full key, or name (if unique).")],
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Revoke a proxy key: requests using it get 401 from then on."""
    from memstore.errors import MemstoreError

    try:
        row = _store(home).revoke(key)
    except MemstoreError as exc:  # no such key
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(_key_json(row)))
        return
    typer.echo(f"revoked key {row.prefix} ({row.name})")


def _when(value: object) -> str:
    return "" if value is None else str(value)[:19]
