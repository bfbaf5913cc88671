"""``memstore ui``: the web memory inspector alone, over a store (``memstore serve`` also serves it at /ui).

Cheap to import: fastapi, uvicorn and the store load only when the command runs. The CLI registers it
lazily (memstore.cli.app.LAZY).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from memstore.cli.common import check_extractor, fail, info, open_memory

LOG_LEVELS = ("debug", "info", "warning", "error")


def ui(
    host: Annotated[str, typer.Option(help="Interface to listen on. Anything but 127.0.0.1 / localhost should sit "
                                           "behind HTTPS.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8766,
    home: Annotated[str | None, typer.Option(
        help="memstore home (database and index); default: the global --home, else $MEMSTORE_HOME or "
             "~/.memstore.")] = None,
    database_url: Annotated[str | None, typer.Option(
        envvar="MEMSTORE_DATABASE_URL", help="SQLAlchemy URL of the store's database (instead of --home's "
                                             "SQLite), e.g. postgresql+psycopg://user@host/db.")] = None,
    vector_url: Annotated[str | None, typer.Option(
        envvar="MEMSTORE_VECTOR_URL", help="URL of the store's chroma server (instead of --home's embedded "
                                           "index).")] = None,
    worker: Annotated[bool, typer.Option(
        "--worker/--no-worker",
        help="Extract pending and retried turns in this process (else they wait for another worker: "
             "`memstore serve` or `memstore turns retry`).")] = True,
    extractor: Annotated[str | None, typer.Option(
        help="llm or heuristic, for --worker (default: MEMSTORE_EXTRACTOR or llm).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Serve the web memory inspector: users, memories (search, edit, history), custom instructions, style
    rules, the outbox and the injection preview, in a browser.

    Sign in with a proxy key that has the admin scope: `memstore keys create --name NAME --admin` (add
    --namespace NS to limit it to one namespace). Open http://HOST:PORT/ui/.
    """
    extractor = check_extractor(extractor)
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}", 2)
    try:
        from memstore.adapters.server.keys import KeyStore
        from memstore.adapters.ui.standalone import run
    except ImportError as exc:  # fastapi / uvicorn / jinja2 missing
        fail(f"memstore ui needs the server extra: pip install 'memstore[server]' ({exc})")
    overrides: dict[str, Any] = {}
    if home:
        overrides["home"] = home
    if database_url:
        overrides["database_url"] = database_url
    if vector_url:
        overrides["vector_url"] = vector_url
    if extractor:
        overrides["extractor"] = extractor
    mem = open_memory(**overrides)
    admins = [k for k in KeyStore(mem.engine).list(include_revoked=False) if k.admin]
    if not admins:
        info("[yellow]No admin key exists for this store yet:[/yellow] create one with "
             "`memstore keys create --name NAME --admin` (same --home) to sign in.")
    bg = None
    if worker:
        from memstore.worker import Worker

        bg = Worker(mem.extraction).start()
    shown = f"[{host}]" if ":" in host else host
    info(f"memstore inspector on http://{shown}:{port}/ui/ (Ctrl+C stops it)")
    try:
        run(mem, host=host, port=port, worker=bg, log_level=log_level.lower())
    finally:
        if bg is not None:
            bg.stop()
