"""The ``memstore serve`` command and the ``memstore keys`` group (create / list / revoke).

Cheap to import: fastapi, uvicorn, litellm and torch load only when a command runs. The CLI registers them
as ``app.command("serve")(serve)`` and ``app.add_typer(keys_app, name="keys")``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

HOME_HELP = "memstore home (database and index); default $MEMSTORE_HOME or ~/.memstore."


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    upstream_base_url: Annotated[str | None, typer.Option(
        envvar="MEMSTORE_UPSTREAM_BASE_URL",
        help="OpenAI-compatible base URL of the real model server. Unset: litellm routes by model name "
             "using its provider env vars (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...).")] = None,
    upstream_api_key: Annotated[str | None, typer.Option(
        envvar="MEMSTORE_UPSTREAM_API_KEY", help="API key for the upstream; it never leaves the server.")] = None,
    upstream_timeout: Annotated[float, typer.Option(help="Seconds to wait for the upstream.")] = 600.0,
    upstream_max_retries: Annotated[int, typer.Option(help="Retries of failed upstream calls.")] = 2,
    namespace: Annotated[str, typer.Option(help="Namespace of requests that name none.")] = "default",
    auth: Annotated[bool, typer.Option(
        "--auth/--no-auth",
        help="Require a proxy key (memstore keys create). --no-auth: local development only.")] = True,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 above).")] = 4 * 1024 * 1024,
    max_messages: Annotated[int, typer.Option(help="Most messages one chat request may carry (400 above).")] = 1000,
    rate_limit: Annotated[float, typer.Option(help="Requests per second per key (token bucket); 0: off.")] = 20.0,
    rate_burst: Annotated[float | None, typer.Option(help="Bucket size; default 2 x --rate-limit.")] = None,
    worker: Annotated[bool, typer.Option(
        "--worker/--no-worker",
        help="Run background extraction in the server (else in a separate worker process).")] = True,
    extractor: Annotated[str | None, typer.Option(help="llm or rules (default: MEMSTORE_EXTRACTOR or llm).")] = None,
    extract_model: Annotated[str | None, typer.Option(
        help="Model for extraction (default MEMSTORE_LLM_MODEL); it goes to the upstream unless "
             "MEMSTORE_LLM_API_BASE says otherwise.")] = None,
    enforce_rules: Annotated[bool, typer.Option(
        help="One corrective retry when a reply breaks a checkable rule.")] = False,
    strict: Annotated[bool, typer.Option(
        help="Fail requests when the memory layer fails (default: fail open).")] = False,
    model: Annotated[list[str] | None, typer.Option(
        help="A model clients may use (repeatable); listed by /v1/models. Default: any.")] = None,
    allow_param: Annotated[list[str] | None, typer.Option(
        help="A non-OpenAI body parameter to pass upstream (repeatable), e.g. top_k.")] = None,
    threads: Annotated[int, typer.Option(help="Worker threads for storage and embedding.")] = 16,
    embedder: Annotated[str, typer.Option(hidden=True, help="default or hash (tests only).")] = "default",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the OpenAI-compatible proxy: any OpenAI SDK gets memory by pointing base_url here.

    Clients send a proxy key as their API key, the user as OpenAI's `user` field or an X-Memstore-User
    header, and optionally X-Memstore-Namespace. Endpoints: /v1/chat/completions, /v1/models, /v1/memory/...,
    /healthz, /metrics.
    """
    try:
        from memstore.adapters.server.app import run_server
        from memstore.adapters.server.state import ServerSettings
    except ImportError as exc:  # fastapi / uvicorn missing
        typer.echo(f"memstore serve needs the server extra: pip install 'memstore[server]' ({exc})", err=True)
        raise typer.Exit(1) from None
    settings = ServerSettings(
        home=home, upstream_base_url=upstream_base_url, upstream_api_key=upstream_api_key,
        upstream_timeout=upstream_timeout, upstream_max_retries=upstream_max_retries, namespace=namespace,
        auth=auth, max_body_bytes=max_body_bytes, max_messages=max_messages, rate_limit=rate_limit,
        rate_burst=rate_burst, worker=worker, extractor=extractor, extract_model=extract_model,
        enforce_rules=enforce_rules, strict=strict, models=list(model or []), allow_params=list(allow_param or []),
        embedder=embedder, threads=threads,
    )
    run_server(settings, host=host, port=port, log_level=log_level)


keys_app = typer.Typer(help="Proxy keys for `memstore serve`: create, list, revoke.", no_args_is_help=True)


def _store(home: str | None):  # type: ignore[no-untyped-def]
    from memstore.adapters.server.keys import open_keys

    return open_keys(home=home)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label: which app or person uses the key.")],
    namespace: Annotated[str | None, typer.Option(
        help="Bind the key to this namespace: it cannot read or write any other.")] = None,
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a proxy key. The key is printed once and only its hash is stored: copy it now."""
    from memstore.errors import MemstoreError

    try:
        row, key = _store(home).create(name, namespace)
    except MemstoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({**row.public_dict(), "key": key}, default=str))
        return
    typer.echo(key)
    bound = f", bound to namespace {row.namespace!r}" if row.namespace else ""
    typer.echo(f"created key {row.prefix} ({row.name}{bound}). It is shown only this once; store it safely.",
               err=True)


@keys_app.command("list")
def keys_list(
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    include_revoked: Annotated[bool, typer.Option("--all/--active", help="Include revoked keys.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List proxy keys (prefix, name, namespace, created, last used, revoked). Secrets are never shown."""
    rows = _store(home).list(include_revoked)
    if as_json:
        typer.echo(json.dumps([r.public_dict() for r in rows], default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("prefix", "name", "namespace", "created", "last used", "revoked")
    for r in rows:
        table.add_row(r.prefix, r.name, r.namespace or "(any)", _when(r.created_at), _when(r.last_used_at),
                      _when(r.revoked_at))
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's prefix, id, full key, or name (if unique).")],
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
) -> None:
    """Revoke a proxy key: requests using it get 401 from then on."""
    from memstore.errors import MemstoreError

    try:
        row = _store(home).revoke(key)
    except MemstoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked key {row.prefix} ({row.name})")


def _when(value: object) -> str:
    return "" if value is None else str(value)[:19]
