"""Housekeeping commands: users, forget, export/import, the extraction outbox (turns), feedback export,
reindex."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memstore.cli.common import (
    JsonOpt,
    OptionalUserOpt,
    UserOpt,
    YesOpt,
    check_extractor,
    check_scope_option,
    clip,
    confirm_or_fail,
    console,
    dumps,
    esc,
    fail,
    info,
    open_memory,
    print_json,
    resolve_id,
    short,
    status,
    table,
    when,
)

if TYPE_CHECKING:
    from memstore.memory import Memory
    from memstore.records import Turn

users_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The users memstore knows.")
turns_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="The extraction outbox: every recorded exchange and what became of it.")
feedback_app = typer.Typer(no_args_is_help=True, add_completion=False,
                           help="People's ratings and preferences of replies.")

OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.",
                                             show_default=False, dir_okay=False)]
ScopeNamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace "
                                                       "(default: all of the user's namespaces).",
                                                       show_default=False, callback=check_scope_option)]


# ---- users ----------------------------------------------------------------------------------------------
@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """Every user (and namespace) with memory counts and last activity, most recent first."""
    mem = open_memory()
    users = mem.users()
    if as_json:
        print_json(users)
        return
    if not users:
        info("No users yet.")
        return
    t = table("User", "Namespace", "Memories", "Invalidated", "Rules", "Turns", "Last activity")
    for u in users:
        t.add_row(esc(u["user_id"]), esc(u["namespace"]), str(u["memories"]), str(u["invalidated"]),
                  str(u["rules"]), str(u["turns"]), when(u["last_activity"]))
    console().print(t)


# ---- forget / export / import -----------------------------------------------------------------------------
def _counts(export: dict[str, Any]) -> dict[str, int]:
    from memstore.portability import SECTIONS

    return {name: len(export.get(name, [])) for name in SECTIONS if export.get(name)}


_NOUNS = {"memories": ("memory", "memories"), "events": ("history event", "history events"),
          "profiles": ("profile", "profiles"), "profile_versions": ("profile version", "profile versions"),
          "rules": ("rule", "rules"), "turns": ("turn", "turns"), "feedback": ("feedback record", "feedback records"),
          "compliance": ("compliance check", "compliance checks")}


def _describe(counts: dict[str, int]) -> str:
    parts = []
    for name, n in counts.items():
        if n:
            one, many = _NOUNS.get(name, (name, name))
            parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts) or "nothing"


def forget(
    user: UserOpt,
    namespace: ScopeNamespaceOpt = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete everything stored about a user (asks first).

    Memories and their history, custom instructions, rules, recorded turns and feedback."""
    mem = open_memory()
    stored = _counts(mem.export(user, namespace))
    where = f" in namespace {namespace!r}" if namespace else ""
    if not stored:
        if as_json:
            print_json({})
            return
        info(f"Nothing is stored about {esc(user)!r}{esc(where)}.")
        return
    if not yes:
        info(f"This deletes everything about {esc(user)!r}{esc(where)}: {_describe(stored)}.")
        confirm_or_fail("Delete it for good?", yes)
    with status("Deleting…"):
        counts = mem.forget(user, namespace)
    counts = {"memories": counts.get("memories", 0), "events": stored.get("events", 0),
              **{k: v for k, v in counts.items() if k != "memories"}}
    if as_json:
        print_json(counts)
        return
    console().print(f"Forgot {esc(user)!r}{esc(where)}: deleted {_describe(counts)}.")


def export(
    user: UserOpt,
    namespace: ScopeNamespaceOpt = None,
    output: OutOpt = None,
) -> None:
    """Write everything stored about a user as JSON (to stdout, or --output FILE)."""
    mem = open_memory()
    data = mem.export(user, namespace)
    if not _counts(data):
        where = f" in namespace {namespace!r}" if namespace else ""
        fail(f"nothing is stored about {user!r}{where} (see `memstore users list`)")
    text = dumps(data) + "\n"
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    output.write_text(text, encoding="utf-8")
    info(f"Exported {_describe(_counts(data))} of {esc(user)!r} to {esc(output)}.")


def import_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="An export file ('-' reads stdin).", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the file and show what would be imported; "
                                          "write nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore an export. All or nothing: a corrupted file changes nothing. Records that exist are kept."""
    from memstore import portability

    limit = portability.MAX_IMPORT_BYTES
    if file == "-":
        raw = sys.stdin.read(limit + 1)
        if len(raw) > limit:
            fail(f"stdin is larger than the import limit of {limit:,} bytes (MAX_IMPORT_BYTES); nothing imported")
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"no such file: {file}")
        if path.stat().st_size > limit:
            fail(f"{file} is {path.stat().st_size:,} bytes, over the import limit of {limit:,} bytes "
                 "(MAX_IMPORT_BYTES); nothing imported")
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file}: {exc}")
    if not raw.strip():
        fail(f"{'stdin' if file == '-' else file} is empty: nothing imported")
    if not raw.lstrip().startswith("{"):
        fail("not a memstore export: it is not a JSON object; nothing imported")
    mem = open_memory(write=True)
    with status("Checking the records…" if dry_run else "Checking and writing the records…"):
        try:
            counts = portability.import_data(mem.engine, raw, dry_run=dry_run,
                                             limits=portability.ImportLimits.from_config(mem.config))
        except Exception as exc:
            from memstore.errors import MemstoreError

            if isinstance(exc, MemstoreError):
                raise type(exc)(f"{exc}; nothing was imported") from exc
            raise
    if not dry_run:
        _index_with_progress(mem, "Indexing the imported memories")
    if as_json:
        print_json(counts)
        return
    added = {k: v for k, v in counts.items() if v}
    verb = "Would import" if dry_run else "Imported"
    console().print(f"{verb} {_describe(added)}" + ("." if added else " (everything is already there)."))


def _unindexed(mem: Memory) -> int:
    from sqlalchemy import func
    from sqlmodel import Session, col, select

    from memstore.records import MemoryRecord

    with Session(mem.engine) as s:
        return int(s.exec(select(func.count()).select_from(MemoryRecord)
                          .where(col(MemoryRecord.indexed).is_(False))).one())


def _index_with_progress(mem: Memory, label: str) -> None:
    """Runs the index repair (embeds unindexed rows) with a progress bar fed by polling SQL."""
    total = _unindexed(mem)
    if total == 0:
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["counts"] = mem.repair()
        except Exception as exc:
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            bar.update(task, completed=max(0, total - _unindexed(mem)))
        bar.update(task, completed=max(0, total - _unindexed(mem)))
    left = _unindexed(mem)
    if "error" in result or left:
        reason = f": {result['error']}" if "error" in result else ""
        info(f"[yellow]warning:[/yellow] {left} memories are stored but not yet searchable by meaning{esc(reason)}; "
             "run `memstore reindex`")


def reindex(as_json: JsonOpt = False) -> None:
    """Rebuild the vector index from the SQL database (the source of truth)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    mem = open_memory()
    with status("Loading the embedding model…"):
        mem.store.embedder.embed(["warm up"])
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("Reindexing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        n = mem.reindex(progress=progress)
    seconds = time.perf_counter() - t0
    if as_json:
        print_json({"indexed": n, "seconds": round(seconds, 3)})
        return
    console().print(f"Reindexed {n} memories in {seconds:.1f} s.")


# ---- turns (the outbox) ---------------------------------------------------------------------------------
def turn_dict(t: Turn) -> dict[str, Any]:
    return t.model_dump(exclude={"pk"})


def _user_text(t: Turn) -> str:
    from memstore.extract.pipeline import turn_view

    try:
        return turn_view(t).user
    except Exception:
        return ""


SPOOLED = "spooled"


@turns_app.command("list")
def turns_list(
    user: OptionalUserOpt = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed turns.")] = False,
    status_: Annotated[str | None, typer.Option("--status", help="pending, processing, done, failed, skipped or "
                                                "spooled (waiting in the spool for a locked database).",
                                                show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Recorded exchanges and their extraction status, newest first."""
    from memstore.outbox import STATUSES

    if failed and status_ and status_ != "failed":
        fail("--failed and --status disagree", 2)
    wanted = "failed" if failed else status_
    if wanted is not None and wanted not in (*STATUSES, SPOOLED):
        fail(f"--status must be one of {', '.join((*STATUSES, SPOOLED))}, not {wanted!r}", 2)
    mem = open_memory()
    # turns the database could not take in time wait in the spool (recorded, not yet in the outbox)
    spooled = [t.model_copy(update={"status": SPOOLED}) for t in mem.outbox.spooled_turns(user)] \
        if wanted in (None, SPOOLED) else []
    turns = [] if wanted == SPOOLED else mem.outbox.list(user_id=user, status=wanted, limit=limit)
    turns = sorted([*spooled, *turns], key=lambda t: t.created_at, reverse=True)[:limit]
    if as_json:
        print_json([turn_dict(t) for t in turns])
        return
    if not turns:
        info("No turns" + (f" with status {wanted}" if wanted else "") + (f" for {esc(user)!r}" if user else "") + ".")
        return
    t = table("ID", "User", "Status", "Tries", "Created", "Message", "Error")
    for turn in turns:
        style = "red" if turn.status == "failed" else ("dim" if turn.status in ("done", "skipped") else
                                                        "yellow" if turn.status == SPOOLED else None)
        t.add_row(short(turn.id), esc(turn.user_id), turn.status, str(turn.attempts), when(turn.created_at),
                  esc(clip(_user_text(turn), 60)), esc(clip(turn.error, 80)), style=style)
    console().print(t)


@turns_app.command("show")
def turns_show(
    turn_id: Annotated[str, typer.Argument(metavar="TURN_ID", help="A turn id or a unique prefix (6+ characters).",
                                           show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """One recorded exchange: its messages, the reply, its status and error."""
    mem = open_memory()
    turn = mem.outbox.get(resolve_id(mem, turn_id, "turn"))
    if as_json:
        print_json(turn_dict(turn))
        return
    c = console()
    c.print(f"[bold]Turn {turn.id}[/bold]  user {esc(turn.user_id)} ({esc(turn.namespace)}), {turn.status}, "
            f"{turn.attempts} attempt(s), {when(turn.created_at)}")
    for m in turn.messages:
        c.print(f"[bold]{esc(m.get('role'))}[/bold]: {esc(m.get('content'))}")
    if turn.response:
        c.print(f"[bold]reply[/bold]: {esc(turn.response)}")
    if turn.error:
        c.print(f"[red]error[/red]: {esc(turn.error)}")


@turns_app.command("retry")
def turns_retry(
    turn_ids: Annotated[list[str] | None, typer.Argument(
        metavar="TURN_ID...", help="Only these turns (ids or prefixes); default: every failed turn.",
        show_default=False)] = None,
    user: OptionalUserOpt = None,
    extractor: Annotated[str | None, typer.Option(help="llm or heuristic (default: the configured one).",
                                                  show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put failed turns back in the outbox and extract every pending turn now."""
    from memstore.worker import drain

    extractor = check_extractor(extractor)
    mem = open_memory(**({"extractor": extractor} if extractor else {}))
    ids = [resolve_id(mem, t, "turn", user=user) for t in turn_ids] if turn_ids else None
    reset = mem.outbox.retry(user_id=user, turn_ids=ids)
    with status(f"Extracting with the {mem.config.extractor} extractor…"):
        handled = drain(mem.extraction)
    failed = mem.outbox.list(user_id=None if ids is not None else user, status="failed", turn_ids=ids, limit=None)
    still = [(t.id, t.error) for t in failed]
    summary = {"retried": reset, "processed": handled, "still_failed": [i for i, _e in still]}
    if as_json:
        print_json(summary)
    else:
        console().print(f"Retried {reset} failed turn(s); processed {handled} turn(s); "
                        f"{len(still)} still failed.")
        for i, e in still:
            console().print(f"  [red]{short(i)}[/red] {esc(clip(e, 100))}")
    if still:
        raise typer.Exit(1)


# ---- feedback ---------------------------------------------------------------------------------------------
@feedback_app.command("export")
def feedback_export(
    format_: Annotated[str, typer.Option("--format", "-f", help="Only openai-dpo: OpenAI's preference "
                                                                "fine-tuning JSONL.")] = "openai-dpo",
    user: OptionalUserOpt = None,
    output: OutOpt = None,
) -> None:
    """Export preference pairs (from comparisons, and +1/-1 ratings of replies to the same prompt) as JSONL."""
    from memstore.instructions.feedback import dpo_pairs

    if format_ != "openai-dpo":
        fail(f"unknown format {format_!r}; the supported format is openai-dpo", 2)
    mem = open_memory()
    lines = [dumps(p, indent=None) for p in dpo_pairs(mem.engine, user)]
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        output.write_text(text, encoding="utf-8")
    info(f"{len(lines)} preference pair(s)" + (f" written to {esc(output)}" if output else "") + ".")
