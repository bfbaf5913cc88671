"""``memstore episodes ...``: the past conversations memstore keeps and recalls (list, search, show, delete).

An episode is one recorded exchange (the user's words of a turn and the reply, clipped), stored as a memory
of kind ``episode`` when the worker processes the turn. Deleting one removes it from recall; ``memstore
forget`` removes them with everything else, and ``MemoryConfig(episodes=False)`` (``MEMSTORE_EPISODES=0``)
stops keeping new ones.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memstore.cli.common import (
    JsonOpt,
    NamespaceOpt,
    OptionalUserOpt,
    UserOpt,
    YesOpt,
    clip,
    confirm_or_fail,
    console,
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
    from memstore.records import MemoryRecord

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Past conversations memstore recalls (episodes): list, search, show, delete.")

TABLE_ROWS = 100
EPISODE = "episode"  # memstore.records.EPISODE (the CLI imports no models at start-up)
ConversationOpt = Annotated[str | None, typer.Option("--conversation", "-c", help="Only this conversation (its id "
                                                     "as listed).", show_default=False)]


def episode_dict(rec: MemoryRecord, score: float | None = None, out_of_date: bool = False) -> dict[str, Any]:
    d = rec.public_dict()
    if score is not None:
        d["score"] = score
    d["out_of_date"] = out_of_date
    return d


STALE_NOTE = "out of date: every fact it gave was invalidated since, so requests leave it out"


def print_episodes(recs: list[MemoryRecord], title: str, scores: list[float] | None = None,
                   stale: Collection[str] = ()) -> None:
    cols = ["ID", "When", "Conversation", "Text"]
    if scores is not None:
        cols.insert(1, "Score")
    t = table(*cols, title=title)
    for i, rec in enumerate(recs):
        text = esc(clip(rec.text, 300)) + (f"\n[yellow]({STALE_NOTE})[/yellow]" if rec.id in stale else "")
        row = [short(rec.id), when(rec.valid_from or rec.created_at), esc(rec.conversation or ""), text]
        if scores is not None:
            row.insert(1, f"{scores[i]:.3f}")
        t.add_row(*row, style="dim" if rec.id in stale else None)
    console().print(t)


def _episodes(mem: Any, user: str, namespace: str, conversation: str | None, limit: int | None = None,
              offset: int = 0) -> list[MemoryRecord]:
    if not conversation:
        return mem.get_all(user, namespace, kind=EPISODE, limit=limit, offset=offset)
    recs = [r for r in mem.get_all(user, namespace, kind=EPISODE) if r.conversation == conversation]
    return recs[offset:] if limit is None else recs[offset:offset + limit]


@app.command("list")
def list_(
    user: UserOpt,
    namespace: NamespaceOpt = "default",
    conversation: ConversationOpt = None,
    limit: Annotated[int | None, typer.Option(help=f"At most this many (the table: {TABLE_ROWS} unless given; "
                                              "--json: all).", min=1, show_default=False)] = None,
    offset: Annotated[int, typer.Option(help="Skip this many first.", min=0)] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List a user's past-conversation excerpts, oldest first."""
    shown = limit if limit is not None or as_json else TABLE_ROWS
    mem = open_memory()
    recs = _episodes(mem, user, namespace, conversation, None if shown is None else shown + 1, offset)
    more = shown is not None and len(recs) > shown
    recs = recs[:shown] if shown is not None else recs
    stale = mem.store.stale_episodes(user, namespace, recs)
    if as_json:
        print_json([episode_dict(r, out_of_date=r.id in stale) for r in recs])
        return
    if not recs:
        info(f"No episodes for {esc(user)!r} in namespace {esc(namespace)!r}"
             + (f" in conversation {esc(conversation)!r}." if conversation else "."))
        return
    print_episodes(recs, f"Episodes of {esc(user)} ({namespace})" + (f", from #{offset + 1}" if offset else ""),
                   stale=stale)
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
    as_json: JsonOpt = False,
) -> None:
    """Search a user's past conversations (the same retriever requests use), best first."""
    mem = open_memory()
    with status("Searching (the first search loads the embedding model)…"):
        hits = mem.search(query, user, namespace, limit=limit, kind=EPISODE)
    stale = mem.store.stale_episodes(user, namespace, [h.memory for h in hits])
    if as_json:
        print_json([episode_dict(h.memory, h.score, h.memory.id in stale) for h in hits])
        return
    if not hits:
        info(f"No past conversation of {esc(user)!r} matches {esc(query)!r}.")
        return
    print_episodes([h.memory for h in hits], f"Episodes of {esc(user)} matching {esc(query)!r}",
                   scores=[h.score for h in hits], stale=stale)


@app.command()
def show(
    id_: Annotated[str, typer.Argument(metavar="ID", help="An episode id, or a unique prefix of at least 6 "
                                       "characters.", show_default=False)],
    user: OptionalUserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one episode in full, with the conversation and turn it came from."""
    mem = open_memory()
    rec = mem.get(resolve_id(mem, id_, user=user), user_id=user)
    if rec.kind != EPISODE:
        fail(f"{short(rec.id)} is a {rec.kind}, not an episode: memstore memories show {short(rec.id)}")
    stale = bool(mem.store.stale_episodes(rec.user_id, rec.namespace, [rec]))
    if as_json:
        print_json(episode_dict(rec, out_of_date=stale))
        return
    t = table("Field", "Value", title=f"Episode {short(rec.id)}")
    for name, value in (("id", rec.id), ("user", rec.user_id), ("namespace", rec.namespace),
                        ("when", when(rec.valid_from or rec.created_at)), ("conversation", rec.conversation or ""),
                        ("position", "" if rec.position is None else str(rec.position)),
                        ("turns", ", ".join(rec.source_turn_ids)),
                        *((("state", STALE_NOTE),) if stale else ())):
        t.add_row(name, esc(value))
    console().print(t)
    console().print(esc(rec.text))


@app.command()
def delete(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID", help="Episode ids (or unique prefixes).",
                                                    show_default=False)] = None,
    user: OptionalUserOpt = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="With --all or --conversation: the "
                                                  "namespace (default: default).", show_default=False)] = None,
    conversation: ConversationOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Every episode of --user (facts are kept).")] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete episodes: by id, a whole conversation (--conversation), or all of a user's (--all). Facts
    extracted from those conversations stay (memstore memories delete removes them)."""
    if bool(ids) + bool(conversation) + all_ != 1:
        fail("give episode ids, or --conversation ID, or --all (exactly one of them)", 2)
    mem = open_memory()
    if ids:
        recs = [mem.get(resolve_id(mem, i, user=user), user_id=user) for i in ids]
        wrong = [r for r in recs if r.kind != EPISODE]
        if wrong:
            fail(f"{short(wrong[0].id)} is a {wrong[0].kind}, not an episode: memstore memories delete "
                 f"{short(wrong[0].id)}")
    else:
        if user is None:
            fail("--user is required with --all and --conversation", 2)
        recs = _episodes(mem, user, namespace or "default", conversation)
        if not recs:
            info("No episodes to delete.")
            if as_json:
                print_json({"deleted": 0, "ids": []})
            return
    if not yes:
        what = f"{len(recs)} episode(s)" + (f" of conversation {esc(conversation)!r}" if conversation else "")
        info(f"This deletes {what} of {esc(recs[0].user_id)!r}, e.g. {esc(clip(recs[0].text, 100))}")
        confirm_or_fail("Delete them?", yes)
    from rich.progress import track

    deleted: list[str] = []
    for rec in track(recs, description="Deleting", console=console(stderr=True), disable=len(recs) < 50):
        mem.delete(rec.id, user_id=rec.user_id, actor="cli", reason="episode deleted in the CLI")
        deleted.append(rec.id)
    if as_json:
        print_json({"deleted": len(deleted), "ids": deleted})
        return
    console().print(f"Deleted {len(deleted)} episode(s).")
