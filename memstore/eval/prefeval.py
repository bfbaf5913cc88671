"""PrefEval explicit preferences: after N unrelated turns, is the user's stated preference still in the block
MemoryClient would inject for the question, and what does that block cost in tokens?

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


@dataclass
class Item:
    topic: str
    index: int
    preference: str
    question: str


def load_items(directory: str | Path, limit: int | None = None) -> list[Item]:
    """Explicit-preference items; with ``limit``, taken round-robin over the topics (in file order)."""
    root = Path(directory) / "explicit_preference"
    per_topic: list[list[Item]] = []
    for f in sorted(root.glob("*.json")):
        rows = json.loads(f.read_text(encoding="utf-8"))
        per_topic.append([Item(f.stem, i, str(r["preference"]), str(r["question"]))
                          for i, r in enumerate(rows) if isinstance(r, Mapping) and r.get("preference")
                          and r.get("question")])
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

def preference_hit(context: Context, preference_turn_id: str) -> bool:
    """True when the context holds a memory or a rule that came from the preference turn."""
    if any(preference_turn_id in (h.memory.source_turn_ids or []) for h in context.memories):
        return True
    return any(preference_turn_id in (r.source_turn_ids or []) for r in context.rules)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Hit rate (%), tokens and extraction rate of rows carrying ``hit``, ``tokens`` and ``extracted``."""
    n = len(rows)
    tokens = [int(r["tokens"]) for r in rows]
    return {
        "items": n,
        "hits": sum(1 for r in rows if r["hit"]),
        "hit_rate": round(100 * sum(1 for r in rows if r["hit"]) / n, 2) if n else 0.0,
        "extracted_rate": round(100 * sum(1 for r in rows if r["extracted"]) / n, 2) if n else 0.0,
        "tokens_mean": round(sum(tokens) / n, 1) if n else 0.0,
        "tokens_p95": round(percentile(tokens, 95), 1),
        "tokens_max": max(tokens, default=0),
    }


# ---- the run ----------------------------------------------------------------------------------------

def run_item(mem: Memory, item: Item, item_no: int, distractors: Sequence[tuple[str, str]], user_id: str) -> dict:
    from memstore.worker import drain

    pref = mem.outbox.record(user_id, NAMESPACE, [{"role": "user", "content": item.preference}], ACK)
    for user_text, reply in distractors:
        mem.outbox.record(user_id, NAMESPACE, [{"role": "user", "content": user_text}], reply)
    drain(mem.extraction)
    extracted = any(pref.id in (m.source_turn_ids or []) for m in mem.get_all(user_id, NAMESPACE)) or any(
        pref.id in (r.source_turn_ids or []) for r in mem.rules(user_id, NAMESPACE).list())
    t0 = time.perf_counter()
    ctx = mem.context(user_id, [{"role": "user", "content": item.question}], NAMESPACE)
    latency = time.perf_counter() - t0
    return {"topic": item.topic, "index": item.index, "item_no": item_no, "hit": preference_hit(ctx, pref.id),
            "extracted": extracted, "tokens": ctx.tokens, "memories_in_block": len(ctx.memories),
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
) -> dict[str, Any]:
    from memstore.config import MemoryConfig
    from memstore.memory import Memory

    items = load_items(data, limit)
    exchanges = load_exchanges(data)
    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory(prefix="memstore-prefeval-")
        store = tmp.name
    cfg = (config or MemoryConfig(extractor="heuristic")).model_copy(update={"home": Path(store)})
    mem = Memory(config=cfg, embedder=embedder)
    results: dict[str, Any] = {}
    t_start = time.perf_counter()
    with progress(show_progress) as bar:
        for n in distractors:
            task = bar.add_task(f"{n} distractors", total=len(items))
            rows = []
            t0 = time.perf_counter()
            for no, item in enumerate(items):
                rows.append(run_item(mem, item, no, distractors_for(exchanges, n, no), f"pe-{n}-{no}"))
                bar.advance(task)
            per_topic = {t: summarise([r for r in rows if r["topic"] == t]) for t in dict.fromkeys(
                r["topic"] for r in rows)}
            results[str(n)] = {**summarise(rows), "seconds": round(time.perf_counter() - t0, 1),
                               "per_topic": per_topic, "rows": rows}
    if tmp is not None:
        tmp.cleanup()
    return {"benchmark": "prefeval", "data": str(data), "extractor": cfg.extractor,
            "token_budget": cfg.token_budget, "search_limit": cfg.search_limit, "items": len(items),
            "limit": limit, "distractor_exchanges_available": len(exchanges),
            "seconds": round(time.perf_counter() - t_start, 1), "distractors": results,
            "environment": environment()}


def print_report(result: Mapping[str, Any], out: Any = None) -> None:
    from rich.table import Table

    from memstore.eval.common import console, print_env

    out = out or console()
    table = Table(title=f"PrefEval explicit preferences, extractor={result['extractor']}, "
                        f"budget={result['token_budget']} tokens, {result['items']} items")
    for col in ("distractors", "items", "in block %", "extracted %", "tokens mean", "tokens p95", "tokens max",
                "seconds"):
        table.add_column(col, justify="right")
    for n, r in result["distractors"].items():
        table.add_row(n, str(r["items"]), f"{r['hit_rate']:.1f}", f"{r['extracted_rate']:.1f}",
                      f"{r['tokens_mean']:.0f}", f"{r['tokens_p95']:.0f}", str(r["tokens_max"]), str(r["seconds"]))
    out.print(table)
    print_env(result["environment"], out)
