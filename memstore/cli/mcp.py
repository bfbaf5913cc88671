"""The ``memstore mcp`` command: one user's memory as an MCP server, over stdio or streamable HTTP.

Cheap to import: the MCP SDK, uvicorn, Memory and the embedding model load only when the command runs. The CLI
registers it lazily (``LAZY["mcp"]`` in memstore/cli/app.py).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer

from memstore.cli.common import check_scope_option, fail, state

HOME_HELP = "memstore home (database and index); default: the global --home, else $MEMSTORE_HOME or ~/.memstore."
LOG_LEVELS = ("debug", "info", "warning", "error")


def mcp(
    user: Annotated[str | None, typer.Option(
        "--user", "-u", callback=check_scope_option, show_default=False,
        help="The user whose memory the tools read and write. Required for stdio. Over HTTP: serve this user "
             "only (a request naming another in X-Memstore-User gets 403); unset, each request names its user "
             "in X-Memstore-User.")] = None,
    namespace: Annotated[str, typer.Option(
        "--namespace", "-n", callback=check_scope_option,
        help="The namespace. Over HTTP: for requests that name none; a proxy key bound to a namespace always "
             "gets its own.")] = "default",
    http: Annotated[bool, typer.Option(
        "--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio; clients send a proxy key "
                       "(memstore keys create) as 'Authorization: Bearer msk_...'.")] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on (with --http).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (with --http).", min=1, max=65535)] = 8766,
    home: Annotated[str | None, typer.Option(help=HOME_HELP)] = None,
    auth: Annotated[bool, typer.Option(
        "--auth/--no-auth", help="With --http: require a proxy key. --no-auth: local development only.")] = True,
    rate_limit: Annotated[float, typer.Option(help="With --http: requests per second per key (token bucket); "
                                                   "0: off.", min=0)] = 20.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error (logs go to stderr).")] = "warning",
) -> None:
    """Run an MCP server over one user's memory, for Claude Desktop, Cursor and other MCP clients.

    Tools: search_memories, add_memory, list_memories, update_memory, delete_memory, get_instructions,
    set_instructions, list_rules, add_rule, remove_rule.

    stdio (what desktop clients launch): memstore mcp --user alice [--namespace work]. Streamable HTTP:
    memstore mcp --http [--port 8766]; every request is checked like memstore serve's: a proxy key as bearer
    token, its namespace binding, X-Memstore-Namespace, the rate limit; the user comes from the X-Memstore-User
    header (or --user). See docs/mcp.md.
    """
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}", 2)
    if not http and user is None:
        fail("stdio serves one user: give --user (or use --http, where each request names its user)", 2)
    home = home or (str(state().home) if state().home is not None else None)
    try:
        from memstore.adapters.mcp import server as mcp_server
    except ImportError as exc:
        fail(f"memstore mcp needs the MCP SDK 2.x: pip install 'mcp>=2' ({exc})")
    from memstore.cli.common import open_memory

    # Nothing but the protocol may reach stdout: a library that prints while the store opens goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        memory = open_memory(write=True, **({"home": home} if home else {}))
    if not http:
        assert user is not None
        _quiet_logging(log_level)
        mcp_server.run_stdio(memory, user, namespace)
        return
    from memstore.adapters.server.state import ServerSettings

    settings = ServerSettings(home=home, namespace=namespace, auth=auth, rate_limit=rate_limit)
    mcp_server.run_http(memory, settings, user_id=user, host=host, port=port, log_level=log_level.lower())


def _quiet_logging(level: str) -> None:
    """Library logs on stderr at ``level`` (the MCP SDK's per-request INFO lines would flood a client's log)."""
    import logging

    logging.basicConfig(level=getattr(logging, level.upper(), logging.WARNING), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in ("mcp", "httpx", "httpx2", "chromadb"):
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.WARNING))
