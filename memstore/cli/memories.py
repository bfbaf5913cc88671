"""``memstore memories ...``: list, search, show, add, edit, delete, invalidate, restore, history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from memstore.cli.common import (
    JsonOpt,
    NamespaceOpt,
    OptionalUserOpt,
    UserOpt,
    YesOpt,
    check_extractor,
    confirm_or_fail,
    console,
    edit_text,
    esc,
    fail,
    info,
    open_memory,
    print_json,
    read_text_arg,
    resolve_id,
    short,
    status,
    table,
    when,
)

if TYPE_CHECKING:
    from memstore.memory import Memory
    from memstore.records import MemoryEvent, MemoryOp, MemoryRecord

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Inspect and edit what is stored about a user.")

KINDS = ("fact", "preference", "event", "instruction", "episode")  # memstore.records.KINDS, without importing it


def _check_kind(value: str | None) -> str | None:
    if value is not None and value not in KINDS:
        raise typer.BadParameter(f"must be one of {', '.join(KINDS)}, not {value!r}")
    return value


KindOpt = Annotated[str | None, typer.Option("--kind", "-k", help="fact, preference, event, instruction or "
                                             "episode (past-conversation excerpts, listed only when asked).",
                                             callback=_check_kind,
                                             show_default=False)]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="A memory id, or a unique prefix of at least 6 characters.",
                                      show_default=False)]


def memory_dict(rec: MemoryRecord) -> dict[str, Any]:
    return rec.public_dict()


def event_dict(ev: MemoryEvent) -> dict[str, Any]:
    return ev.model_dump(exclude={"pk"})


def op_dict(op: MemoryOp) -> dict[str, Any]:
    return {"event": op.event, "id": op.id, "text": op.memory.text if op.memory else None,
            "previous_text": op.previous_text, "reason": op.reason}


def _flags(rec: MemoryRecord) -> str:
    out = []
    if rec.pinned:
        out.append("pinned")
    if rec.superseded_by:
        out.append(f"superseded by {short(rec.superseded_by)}")
    elif rec.invalid_at is not None:
        out.append(f"invalid since {when(rec.invalid_at)}")
    return ", ".join(out)


TABLE_ROWS = 100  # rows a table shows by default: a terminal page or two, rendered fast


def print_memories(recs: list[MemoryRecord], title: str, scores: list[float] | None = None) -> None:
    cols = ["ID", "Kind", "Text", "Updated", "Notes"]
    if scores is not None:
        cols.insert(1, "Score")
    t = table(*cols, title=title)
    for i, rec in enumerate(recs):
        row = [short(rec.id), rec.kind, esc(rec.text), when(rec.updated_at), _flags(rec)]
        if scores is not None:
            row.insert(1, f"{scores[i]:.3f}")
        style = "dim" if rec.invalid_at is not None else None
        t.add_row(*row, style=style)
    console().print(t)


def print_ops(ops: list[MemoryOp]) -> None:
    if not ops:
        info("Nothing to remember in that.")
        return
    for op in ops:
        text = esc(op.memory.text) if op.memory else ""
        extra = f"  [dim](was: {esc(op.previous_text)})[/dim]" if op.previous_text and op.event == "UPDATE" else ""
        console().print(f"{op.event:<10} {short(op.id)}  {text}{extra}")


def print_history(events: list[MemoryEvent], title: str) -> None:
    t = table("When", "Event", "Change", "Actor", "Reason", title=title)
    for ev in events:
        if ev.event == "UPDATE" and ev.old_text != ev.new_text:
            change = f"{esc(ev.old_text)} [dim]→[/dim] {esc(ev.new_text)}"
        elif ev.event in ("DELETE", "INVALIDATE"):
            change = f"[strike]{esc(ev.old_text or '')}[/strike]"
        else:
            change = esc(ev.new_text or ev.old_text or "")
        t.add_row(when(ev.created_at), ev.event, change, ev.actor, esc(ev.reason or ""))
    console().print(t)


@app.command("list")
def list_(
    user: UserOpt,
    namespace: NamespaceOpt = "default",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include invalidated (superseded) memories.")] = False,
    kind: KindOpt = None,
    limit: Annotated[int | None, typer.Option(help=f"At most this many (the table: {TABLE_ROWS} unless given; "
                                              "--json: all).", min=1, show_default=False)] = None,
    offset: Annotated[int, typer.Option(help="Skip this many first.", min=0)] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List a user's memories, oldest first (facts; --kind episode lists past-conversation excerpts)."""
    mem = open_memory()
    shown = limit if limit is not None or as_json else TABLE_ROWS
    recs = mem.get_all(user, namespace, include_invalid=all_, kind=kind,
                       limit=None if shown is None else shown + 1, offset=offset)
    more = shown is not None and len(recs) > shown
    recs = recs[:shown] if shown is not None else recs
    if as_json:
        print_json([memory_dict(r) for r in recs])
        return
    if not recs:
        info(f"No memories for {esc(user)!r} in namespace {esc(namespace)!r}" + (" past that offset." if offset
                                                                               else "."))
        return
    valid = sum(r.invalid_at is None for r in recs)
    title = f"Memories of {esc(user)} ({namespace}): {valid} current" + (
        f", {len(recs) - valid} invalidated" if all_ else "") + (f", from #{offset + 1}" if offset else "")
    print_memories(recs, title)
    if more:
        info(f"Showing {len(recs)} from #{offset + 1}; more follow: --offset {offset + len(recs)} for the next "
             "ones, --limit N for more at once, --json for all.")


@app.command()
def search(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="What to look for, in plain words.",
                                         show_default=False)],
    user: UserOpt,
    namespace: NamespaceOpt = "default",
    limit: Annotated[int, typer.Option(help="At most this many results.", min=1)] = 10,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include invalidated memories.")] = False,
    kind: KindOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a user's memories (hybrid: meaning + words), best first. Facts only unless --kind says otherwise
    (--kind episode searches past conversations)."""
    mem = open_memory()
    with status("Searching (the first search loads the embedding model)…"):
        hits = mem.search(query, user, namespace, limit=limit, include_invalid=all_, kind=kind)
    if as_json:
        print_json([{**memory_dict(h.memory), "score": h.score, "sources": h.sources} for h in hits])
        return
    if not hits:
        info(f"No memories of {esc(user)!r} match {esc(query)!r}.")
        return
    print_memories([h.memory for h in hits], f"Memories of {esc(user)} matching {esc(query)!r}",
                   scores=[h.score for h in hits])


@app.command()
def show(id_: IdArg, user: OptionalUserOpt = None, as_json: JsonOpt = False) -> None:
    """Show one memory with all its fields and its history."""
    mem = open_memory()
    rec = mem.get(resolve_id(mem, id_, user=user), user_id=user)
    if as_json:
        print_json(memory_dict(rec))
        return
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    rows = [("id", rec.id), ("user", rec.user_id), ("namespace", rec.namespace), ("kind", rec.kind),
            ("text", rec.text), ("status", "current" if rec.invalid_at is None else _flags(rec)),
            ("pinned", str(rec.pinned)), ("importance", f"{rec.importance:g}"),
            ("confidence", f"{rec.confidence:g}"), ("source", rec.source),
            ("created", when(rec.created_at)), ("updated", when(rec.updated_at)),
            ("valid from", when(rec.valid_from)), ("source turns", ", ".join(short(t) for t in rec.source_turn_ids)),
            ("metadata", str(rec.meta) if rec.meta else "")]
    if rec.superseded_by:
        rows.append(("superseded by", rec.superseded_by))
    for k, v in rows:
        if v:
            t.add_row(k, esc(v))
    console().print(t)
    console().print()
    print_history(mem.history(rec.id), "History")


@app.command()
def add(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="What to remember ('-' reads stdin).",
                                        show_default=False)],
    user: UserOpt,
    namespace: NamespaceOpt = "default",
    kind: Annotated[str, typer.Option("--kind", "-k", help="fact, preference, event or instruction.",
                                      callback=_check_kind)] = "fact",
    pinned: Annotated[bool, typer.Option("--pin", help="Always inject it, whatever the request.")] = False,
    importance: Annotated[float, typer.Option(min=0.0, max=1.0, help="0 to 1.")] = 0.5,
    infer: Annotated[bool, typer.Option("--infer", help="Run the extractor on the text instead of storing "
                                                        "it verbatim (reconciles with what is stored).")] = False,
    extractor: Annotated[str | None, typer.Option(help="With --infer: llm or heuristic (default: the config's).",
                                                  show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store a memory verbatim (or, with --infer, what the extractor makes of the text)."""
    text = read_text_arg(text)
    if not text.strip():
        fail("the text is empty: nothing stored")
    overrides = {"extractor": _extractor(extractor)} if extractor else {}
    mem = open_memory(write=True, **overrides)
    with status("Storing (the first write loads the embedding model)…"):
        if infer:
            ops = mem.add(text, user, namespace, infer=True)
        else:
            ops = mem.add(text, user, namespace, infer=False, kind=kind, pinned=pinned, importance=importance,
                          actor="cli")
    if as_json:
        print_json([op_dict(op) for op in ops])
        return
    print_ops(ops)


def _extractor(name: str) -> str:
    return check_extractor(name) or name


@app.command()
def edit(
    id_: IdArg,
    text: Annotated[str | None, typer.Option("--text", "-t", help="The new text (else $EDITOR opens).",
                                             show_default=False)] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the history.", show_default=False)] = None,
    kind: KindOpt = None,
    pin: Annotated[bool | None, typer.Option("--pin/--unpin", help="Pin or unpin.", show_default=False)] = None,
    importance: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="0 to 1.", show_default=False)] = None,
    user: OptionalUserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a memory's text (in $EDITOR unless --text is given) or its fields.

    The old text stays in the history."""
    if text is not None:
        text = read_text_arg(text)
    mem = open_memory()
    rec = mem.get(resolve_id(mem, id_, user=user), user_id=user)
    fields_given = kind is not None or pin is not None or importance is not None
    if text is None and not fields_given:
        edited = edit_text(rec.text, comment=f"Edit the memory above, save and quit. Lines starting with '#' "
                                             f"are ignored.\nMemory {rec.id} of {rec.user_id} ({rec.namespace}, "
                                             f"{rec.kind}). An empty text cancels.")
        if edited is None:
            info("No changes; the memory is as it was.")
            return
        if not edited:
            fail("empty text: nothing changed (use `memstore memories delete` to delete a memory)")
        text = edited
    with status("Saving…"):
        updated = mem.update(rec.id, text, user_id=rec.user_id, actor="cli", reason=reason or "edited in the CLI",
                             kind=kind, pinned=pin, importance=importance)
    if as_json:
        print_json(memory_dict(updated))
        return
    console().print(f"Updated {short(updated.id)}: {esc(updated.text)}")


@app.command()
def delete(
    id_: IdArg,
    user: OptionalUserOpt = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the history.", show_default=False)] = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a memory (asks first; its history is kept until the user is forgotten)."""
    mem = open_memory()
    rec = mem.get(resolve_id(mem, id_, user=user), user_id=user)
    if not yes:
        info(f"This deletes {short(rec.id)} of {esc(rec.user_id)!r}: {esc(rec.text)}")
        confirm_or_fail("Delete it?", yes)
    op = mem.delete(rec.id, user_id=rec.user_id, actor="cli", reason=reason or "deleted in the CLI")
    if as_json:
        print_json(op_dict(op))
        return
    console().print(f"Deleted {short(rec.id)}: {esc(rec.text)}")
    info(f"[dim]Its history stays: memstore memories history {short(rec.id)}[/dim]")


@app.command()
def invalidate(
    id_: IdArg,
    user: OptionalUserOpt = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the history.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark a memory as no longer true (kept in history and in `list --all`)."""
    mem = open_memory()
    rec = mem.get(resolve_id(mem, id_, user=user), user_id=user)
    op = mem.invalidate(rec.id, user_id=rec.user_id, actor="cli", reason=reason or "invalidated in the CLI")
    if as_json:
        print_json(op_dict(op))
        return
    console().print(f"{'Invalidated' if op.event == 'INVALIDATE' else 'Already invalid'} {short(rec.id)}: "
                    f"{esc(rec.text)}")


@app.command()
def restore(id_: IdArg, user: OptionalUserOpt = None, as_json: JsonOpt = False) -> None:
    """Make an invalidated memory current again."""
    mem = open_memory()
    rec = mem.get(resolve_id(mem, id_, user=user), user_id=user)
    op = mem.restore(rec.id, user_id=rec.user_id, actor="cli")
    if as_json:
        print_json(op_dict(op))
        return
    console().print(f"{'Restored' if op.event == 'RESTORE' else 'Already current'} {short(rec.id)}: {esc(rec.text)}")


@app.command()
def history(id_: IdArg, user: OptionalUserOpt = None, as_json: JsonOpt = False) -> None:
    """Every change of a memory: what changed, who made it and why.

    Actors: llm, heuristic (the extractors; rules in stores before 0.2), user, api, cli, import. Works for
    deleted memories too."""
    mem = open_memory()
    memory_id = resolve_id(mem, id_, user=user, include_history=True)
    events = mem.history(memory_id, user_id=user)
    if as_json:
        print_json([event_dict(e) for e in events])
        return
    print_history(events, f"History of memory {short(memory_id)}")
    _print_successor(mem, memory_id)


def _print_successor(mem: Memory, memory_id: str) -> None:
    from memstore.errors import NotFoundError

    try:
        rec = mem.get(memory_id)
    except NotFoundError:
        info("[dim]This memory is deleted.[/dim]")
        return
    if rec.superseded_by:
        try:
            nxt = mem.get(rec.superseded_by)
            info(f"Superseded by {short(nxt.id)}: {esc(nxt.text)}")
        except NotFoundError:
            info(f"Superseded by {short(rec.superseded_by)} (since deleted)")
