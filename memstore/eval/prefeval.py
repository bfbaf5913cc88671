"""PrefEval: after N unrelated turns, is the user's preference still in the block MemoryClient would inject
for the question, and what does that block cost in tokens?

Three item sets (``sets``): ``explicit`` (the user states the preference in one message), and the implicit
ones, where a conversation reveals the preference without stating it: ``choice-based`` (the user picks one of
the assistant's options and says why) and ``persona-driven`` (a longer chat in which the preference comes up
in passing). An implicit item's conversation is recorded turn by turn as a chat client sends it (each request
repeats the history, so its turns share one conversation), and the item is a hit when the block holds
anything that came from that conversation: an extracted memory or rule, or an excerpt of the conversation
itself (an episode).

For every item (a fresh user): the preference statement is recorded as a chat turn, then N distractor
exchanges (user + assistant, taken in order from ``filtered_inter_turns.json``, starting at an item-
dependent offset and wrapping around), all extracted through the outbox exactly as the background worker
does (``memstore.worker.drain``). Then ``Memory.context(user, question)`` builds the block, and the item
is a hit when the block holds a memory or a rule derived from the preference turn (its
``source_turn_ids``). Reported: hit rate, injected tokens (mean, p95, max), and, for diagnosis, how often
the preference produced any memory at all.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memstore.eval.common import environment, percentile, progress

if TYPE_CHECKING:
    from memstore.memory import Memory
    from memstore.recall.context import Context

NAMESPACE = "prefeval"
ACK = "Got it, I'll keep that in mind."


SETS = ("explicit", "choice-based", "persona-driven")


@dataclass
class Item:
    topic: str
    index: int
    preference: str
    question: str
    conversation: list[tuple[str, str]] | None = None  # implicit items: the (user, assistant) turns revealing it


def conversation_of(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The revealing conversation of an implicit item as (user, assistant) turns, in order."""
    conv = row.get("conversation")
    if not isinstance(conv, Mapping):
        return []
    if "query" in conv:  # choice-based: the question, the options, the user's pick, the acknowledgement
        turns = [(conv.get("query"), conv.get("assistant_options")),
                 (conv.get("user_selection"), conv.get("assistant_acknowledgment"))]
    else:  # persona-driven: {"0": {"user": ..., "assistant": ...}, ...}
        keys = sorted((k for k in conv if str(k).isdigit()), key=int)
        turns = [(conv[k].get("user"), conv[k].get("assistant")) for k in keys if isinstance(conv[k], Mapping)]
    return [(u, a if isinstance(a, str) else "") for u, a in turns if isinstance(u, str) and u.strip()]


def load_items(directory: str | Path, limit: int | None = None, kind: str = "explicit") -> list[Item]:
    """The items of one set (``SETS``); with ``limit``, taken round-robin over the topics (in file order)."""
    if kind not in SETS:
        raise ValueError(f"unknown PrefEval set {kind!r}: one of {', '.join(SETS)}")
    root = Path(directory) / ("explicit_preference" if kind == "explicit" else f"implicit_preference/{kind}")
    if not root.is_dir():
        raise ValueError(f"no {root}: --data must be the PrefEval directory")
    per_topic: list[list[Item]] = []
    for f in sorted(root.glob("*.json")):
        rows = json.loads(f.read_text(encoding="utf-8"))
        items = [Item(f.stem, i, str(r["preference"]), str(r["question"]),
                      None if kind == "explicit" else conversation_of(r))
                 for i, r in enumerate(rows) if isinstance(r, Mapping) and r.get("preference") and r.get("question")]
        per_topic.append([it for it in items if it.conversation is None or it.conversation])
    items: list[Item] = []
    depth = 0
    while any(depth < len(t) for t in per_topic):
        for t in per_topic:
            if depth < len(t):
                items.append(t[depth])
        depth += 1
    return items[:limit] if limit is not None else items


def load_exchanges(directory: str | Path) -> list[tuple[str, str]]:
    """(user, assistant) pairs of the distractor conversations, in order."""
    data = json.loads((Path(directory) / "filtered_inter_turns.json").read_text(encoding="utf-8"))
    return exchanges_of(data)


def exchanges_of(conversations: Iterable[Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for conv in conversations:
        msgs = conv.get("conversation", []) if isinstance(conv, Mapping) else conv
        pending: str | None = None
        for m in msgs or []:
            if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
                continue
            if m.get("role") == "user":
                if pending is not None:
                    out.append((pending, ""))
                pending = m["content"]
            elif m.get("role") == "assistant" and pending is not None:
                out.append((pending, m["content"]))
                pending = None
        if pending is not None:
            out.append((pending, ""))
    return out


def distractors_for(exchanges: Sequence[tuple[str, str]], n: int, item_no: int) -> list[tuple[str, str]]:
    """``n`` exchanges starting at an offset that depends on the item, wrapping around."""
    if not exchanges or n <= 0:
        return []
    start = (item_no * 37) % len(exchanges)
    return [exchanges[(start + i) % len(exchanges)] for i in range(n)]


# ---- scoring (pure) ---------------------------------------------------------------------------------

def preference_hit(context: Context, preference_turn_id: str | Iterable[str]) -> bool:
    """True when the context holds a memory, an episode or a rule that came from the preference turn (or
    from any of the given turns: an implicit item's whole conversation)."""
    want = {preference_turn_id} if isinstance(preference_turn_id, str) else set(preference_turn_id)
    if any(want & set(h.memory.source_turn_ids or []) for h in [*context.memories, *context.episodes]):
        return True
    return any(want & set(r.source_turn_ids or []) for r in context.rules)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Hit rate (%), tokens and extraction rate of rows carrying ``hit``, ``tokens`` and ``extracted``."""
    n = len(rows)
    tokens = [int(r["tokens"]) for r in rows]
    return {
        "items": n,
        "hits": sum(1 for r in rows if r["hit"]),
        "hit_rate": round(100 * sum(1 for r in rows if r["hit"]) / n, 2) if n else 0.0,
        "hit_by_episode_rate": round(100 * sum(1 for r in rows if r.get("hit_by_episode")) / n, 2) if n else 0.0,
        "extracted_rate": round(100 * sum(1 for r in rows if r["extracted"]) / n, 2) if n else 0.0,
        "tokens_mean": round(sum(tokens) / n, 1) if n else 0.0,
        "tokens_p95": round(percentile(tokens, 95), 1),
        "tokens_max": max(tokens, default=0),
    }


# ---- the run ----------------------------------------------------------------------------------------

def run_item(mem: Memory, item: Item, item_no: int, distractors: Sequence[tuple[str, str]], user_id: str) -> dict:
    from memstore.worker import drain

    if item.conversation is None:
        ids = {mem.outbox.record(user_id, NAMESPACE, [{"role": "user", "content": item.preference}], ACK).id}
    else:  # as a chat client sends it: every request repeats the conversation so far
        ids, history = set(), []
        for user_text, reply in item.conversation:
            history.append({"role": "user", "content": user_text})
            ids.add(mem.outbox.record(user_id, NAMESPACE, list(history), reply).id)
            history.append({"role": "assistant", "content": reply})
    for user_text, reply in distractors:
        mem.outbox.record(user_id, NAMESPACE, [{"role": "user", "content": user_text}], reply)
    drain(mem.extraction)
    extracted = any(ids & set(m.source_turn_ids or []) for m in mem.get_all(user_id, NAMESPACE)) or any(
        ids & set(r.source_turn_ids or []) for r in mem.rules(user_id, NAMESPACE).list())
    t0 = time.perf_counter()
    ctx = mem.context(user_id, [{"role": "user", "content": item.question}], NAMESPACE)
    latency = time.perf_counter() - t0
    from_episode = any(ids & set(h.memory.source_turn_ids or []) for h in ctx.episodes)
    return {"topic": item.topic, "index": item.index, "item_no": item_no, "hit": preference_hit(ctx, ids),
            "hit_by_episode": from_episode, "extracted": extracted, "tokens": ctx.tokens,
            "memories_in_block": len(ctx.memories), "episodes_in_block": len(ctx.episodes),
            "rules_in_block": len(ctx.rules), "stored_memories": len(mem.get_all(user_id, NAMESPACE)),
            "context_latency_s": latency}


def run_prefeval(
    data: str | Path,
    distractors: Sequence[int] = (300,),
    limit: int | None = None,
    config: Any = None,
    store: str | Path | None = None,
    show_progress: bool = True,
    embedder: Any = None,
    sets: Sequence[str] = ("explicit",),
) -> dict[str, Any]:
    """Every item of each set in ``sets`` (``SETS``), with each number of distractors, each a fresh user."""
    from memstore.config import MemoryConfig
    from memstore.memory import Memory

    sets = list(dict.fromkeys(sets))
    item_sets = {kind: load_items(data, limit, kind) for kind in sets}  # checked before any work
    exchanges = load_exchanges(data)
    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory(prefix="memstore-prefeval-")
        store = tmp.name
    cfg = (config or MemoryConfig(extractor="heuristic")).model_copy(update={"home": Path(store)})
    mem = Memory(config=cfg, embedder=embedder)
    by_set: dict[str, Any] = {}
    t_start = time.perf_counter()
    with progress(show_progress) as bar:
        for kind, items in item_sets.items():
            results: dict[str, Any] = {}
            for n in distractors:
                task = bar.add_task(f"{kind}, {n} distractors", total=len(items))
                rows = []
                t0 = time.perf_counter()
                for no, item in enumerate(items):
                    rows.append(run_item(mem, item, no, distractors_for(exchanges, n, no), f"pe-{kind}-{n}-{no}"))
                    bar.advance(task)
                per_topic = {t: summarise([r for r in rows if r["topic"] == t]) for t in dict.fromkeys(
                    r["topic"] for r in rows)}
                results[str(n)] = {**summarise(rows), "seconds": round(time.perf_counter() - t0, 1),
                                   "per_topic": per_topic, "rows": rows}
            by_set[kind] = {"items": len(items), "distractors": results}
    if tmp is not None:
        tmp.cleanup()
    out = {"benchmark": "prefeval", "data": str(data), "extractor": cfg.extractor,
           "token_budget": cfg.token_budget, "search_limit": cfg.search_limit, "episodes": cfg.episodes,
           "episode_limit": cfg.episode_limit, "limit": limit, "distractor_exchanges_available": len(exchanges),
           "seconds": round(time.perf_counter() - t_start, 1), "sets": by_set, "environment": environment()}
    if "explicit" in by_set:  # the layout of earlier result files
        out["items"] = by_set["explicit"]["items"]
        out["distractors"] = by_set["explicit"]["distractors"]
    return out


def print_report(result: Mapping[str, Any], out: Any = None) -> None:
    from rich.table import Table

    from memstore.eval.common import console, print_env

    out = out or console()
    sets = result.get("sets") or {"explicit": {"items": result["items"], "distractors": result["distractors"]}}
    table = Table(title=f"PrefEval: the preference in the injected block, extractor={result['extractor']}, "
                        f"budget={result['token_budget']} tokens")
    for col in ("set", "distractors", "items", "in block %", "via episode %", "extracted %", "tokens mean",
                "tokens p95", "tokens max", "seconds"):
        table.add_column(col, justify="right")
    for kind, block in sets.items():
        for n, r in block["distractors"].items():
            table.add_row(kind, n, str(r["items"]), f"{r['hit_rate']:.1f}", f"{r.get('hit_by_episode_rate', 0):.1f}",
                          f"{r['extracted_rate']:.1f}", f"{r['tokens_mean']:.0f}", f"{r['tokens_p95']:.0f}",
                          str(r["tokens_max"]), str(r["seconds"]))
    out.print(table)
    print_env(result["environment"], out)
