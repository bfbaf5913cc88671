"""LoCoMo turn-level evidence recall@k: does retrieval find the turns a question's answer rests on?

Each conversation is ingested into its own scope and, for every question of categories 1-4 (1 multi-hop,
2 temporal, 3 open-domain, 4 single-hop; 5, adversarial, has no evidence to find), the retriever's top-k
memories are scored by the fraction of the question's evidence turn ids among their sources::

    recall@k(q) = |evidence(q) ∩ ⋃ sources(top-k memories)| / |evidence(q)|

averaged over questions, overall and per category. Modes:

* ``raw``: one memory per turn (no model). ``text="keyed"`` stores "Speaker (8 May 2023): text", the
  speaker and the session date as keys of the memory; ``"plain"`` stores the turn text alone. An image
  turn's caption is appended as "[shares a photo of ...]" in both.
* ``extract``: every turn goes through the outbox and the configured extractor (``MemoryConfig.extractor``)
  as a chat message of its speaker, dated with the session time, into the conversation's scope (as in raw
  mode). The worker keeps each turn as an episode ("Speaker: ...") beside the facts it extracts; the search
  runs over both, ranked in one list (``Memory.search(episodes=True)``). Memories map back to the turns they
  came from through ``source_turn_ids``.

Reference (LoCoMo paper, DRAGON over turns): recall@5 56.7, @10 66.2, @25 76.7.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memstore.eval.common import environment, progress, summary_ms
from memstore.eval.extraction import parse_locomo_datetime

if TYPE_CHECKING:
    from memstore.memory import Memory
    from memstore.records import MemoryHit

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
DEFAULT_KS = (5, 10, 25)
REFERENCE = {"name": "LoCoMo paper, DRAGON over turns", "recall": {5: 56.7, 10: 66.2, 25: 76.7}}
NAMESPACE = "locomo"
_EVIDENCE = re.compile(r"^D:?(\d+):(\d+)$")


# ---- the data ---------------------------------------------------------------------------------------

@dataclass
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    date: datetime | None
    index: int
    caption: str | None = None


@dataclass
class Question:
    text: str
    category: int
    evidence: list[str]
    answer: str = ""


@dataclass
class Conversation:
    sample_id: str
    speakers: list[str]
    turns: list[Turn]
    questions: list[Question]
    dropped_evidence: list[str] = field(default_factory=list)   # ids not among the turns
    skipped_questions: int = 0                                   # categories 1-4 left with no evidence
    # the dataset's observations (facts about each speaker, LLM-written per session) by the turn they cite
    observations: dict[str, list[str]] = field(default_factory=dict)


def parse_session_date(text: str) -> datetime | None:
    """LoCoMo's session stamps, e.g. "1:56 pm on 8 May, 2023" (taken as UTC)."""
    stamp = parse_locomo_datetime(text)
    return stamp.replace(tzinfo=UTC) if stamp is not None else None


def parse_evidence(raw: Iterable[Any], known: set[str]) -> tuple[list[str], list[str]]:
    """Evidence turn ids, normalised ("D:11:26" -> "D11:26", "D8:6; D9:17" split), and the ids dropped
    because no such turn exists."""
    good: list[str] = []
    dropped: list[str] = []
    for item in raw:
        for part in re.split(r"[;,\s]+", str(item)):
            if not part:
                continue
            m = _EVIDENCE.match(part)
            tid = f"D{m.group(1)}:{m.group(2)}" if m else part
            if m and tid in known:
                if tid not in good:
                    good.append(tid)
            else:
                dropped.append(part)
    return good, dropped


def parse_conversation(sample: Mapping[str, Any], n: int = 0, categories: Iterable[int] = CATEGORIES) -> Conversation:
    conv = sample.get("conversation", {})
    keys = sorted((k for k, v in conv.items() if re.fullmatch(r"session_\d+", k) and isinstance(v, list)),
                  key=lambda k: int(k.split("_")[1]))
    turns: list[Turn] = []
    for key in keys:
        session = int(key.split("_")[1])
        date = parse_session_date(str(conv.get(f"{key}_date_time", "")))
        for t in conv[key]:
            if not isinstance(t, Mapping) or "dia_id" not in t:
                continue
            turns.append(Turn(dia_id=str(t["dia_id"]), speaker=str(t.get("speaker", "")), text=str(t.get("text", "")),
                              session=session, date=date, index=len(turns), caption=t.get("blip_caption") or None))
    known = {t.dia_id for t in turns}
    speakers = [s for s in (conv.get("speaker_a"), conv.get("speaker_b")) if s] or \
        list(dict.fromkeys(t.speaker for t in turns))
    cats = set(categories)
    questions: list[Question] = []
    dropped: list[str] = []
    skipped = 0
    for qa in sample.get("qa", []):
        if qa.get("category") not in cats:
            continue
        ev, bad = parse_evidence(qa.get("evidence", []), known)
        dropped.extend(bad)
        if not ev:
            skipped += 1
            continue
        questions.append(Question(text=str(qa["question"]), category=int(qa["category"]), evidence=ev,
                                  answer=str(qa.get("answer", ""))))
    observations: dict[str, list[str]] = {}
    for per_session in (sample.get("observation") or {}).values():
        for items in (per_session.values() if isinstance(per_session, Mapping) else []):
            for item in items if isinstance(items, list) else []:
                if isinstance(item, list) and len(item) == 2 and str(item[0]).strip():
                    cited = item[1] if isinstance(item[1], list) else [item[1]]
                    for tid in parse_evidence(cited, known)[0]:
                        observations.setdefault(tid, []).append(str(item[0]).strip())
    return Conversation(sample_id=str(sample.get("sample_id", f"conv-{n}")), speakers=speakers, turns=turns,
                        questions=questions, dropped_evidence=dropped, skipped_questions=skipped,
                        observations=observations)


def load_locomo(path: str | Path) -> list[Conversation]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [parse_conversation(s, i) for i, s in enumerate(data)]


def _date_text(d: datetime | None) -> str:
    return f"{d.day} {d.strftime('%B')} {d.year}" if d else ""


def turn_text(turn: Turn, keyed: bool = True) -> str:
    """What a raw-mode memory says: the turn (plus its image caption), keyed with speaker and date."""
    body = turn.text.strip()
    if turn.caption:
        body = f"{body} [shares {turn.caption.strip()}]".strip()
    if not keyed:
        return body or "(empty)"
    when = _date_text(turn.date)
    return f"{turn.speaker} ({when}): {body}" if when else f"{turn.speaker}: {body}"


# ---- scoring (pure) ---------------------------------------------------------------------------------

def recall_at_k(ranked_sources: Sequence[Iterable[str]], evidence: Iterable[str], k: int) -> float:
    """Fraction of ``evidence`` among the sources of the first ``k`` retrieved memories."""
    want = set(evidence)
    if not want:
        return 0.0
    got: set[str] = set()
    for sources in ranked_sources[:k]:
        got.update(sources)
    return len(want & got) / len(want)


def aggregate(rows: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """Mean recall@k (in %) over rows, overall and per category; rows carry ``category`` and ``recall``
    ({k: fraction}), optionally ``tokens`` ({k: int}) and ``latency_s``."""
    def block(sub: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(sub)}
        for k in ks:
            vals = [float(r["recall"][k]) for r in sub]
            out[f"recall@{k}"] = round(100 * sum(vals) / len(vals), 2) if vals else 0.0
        return out

    result = {"overall": block(rows), "per_category": {}}
    for cat, name in CATEGORIES.items():
        sub = [r for r in rows if r["category"] == cat]
        if sub:
            result["per_category"][f"{cat} {name}"] = block(sub)
    if rows and "tokens" in rows[0]:
        result["tokens_per_question"] = {
            f"@{k}": round(sum(r["tokens"][k] for r in rows) / len(rows), 1) for k in ks}
    lat = [r["latency_s"] for r in rows if "latency_s" in r]
    if lat:
        result["search_latency"] = summary_ms(lat)
    blocks = [r for r in rows if r.get("in_block") is not None]
    if blocks:  # what a model sees: evidence inside the block Memory.context builds at the default budget
        result["in_block"] = {"recall": round(100 * sum(r["in_block"] for r in blocks) / len(blocks), 2),
                              "tokens": round(sum(r["block_tokens"] for r in blocks) / len(blocks), 1)}
    return result


# ---- ingestion --------------------------------------------------------------------------------------

def ingest_raw(mem: Memory, conv: Conversation, keyed: bool = True, namespace: str = NAMESPACE) -> int:
    """One memory per turn, in one batch (one embedding call), each with where it came from: the session as
    its conversation, the turn's place in it, and its speaker."""
    items = [{
        "text": turn_text(t, keyed), "kind": "event", "valid_from": t.date, "source_turn_ids": [t.dia_id],
        "conversation": f"session-{t.session}", "position": t.index, "speaker": t.speaker,
        "meta": {"dia_id": t.dia_id},
    } for t in conv.turns]
    ops = mem.store.add_many(conv.sample_id, namespace, items, actor="import")
    return sum(1 for o in ops if o.event == "ADD")


class ObservationReplay:
    """An extractor that answers with the dataset's observations instead of asking a model: the facts an
    LLM wrote about each speaker, session by session, each stored from the turn it cites (one cited by
    several turns gets them all as sources, as a fact stated again does). It runs where the configured
    extractor runs, after the gate and in the worker's batches, so extract mode can be measured with
    LLM-written facts offline. Turns are recognised by their text."""

    name = "observations"

    def __init__(self, conv: Conversation) -> None:
        self._due: dict[str, list[list[str]]] = {}
        for t in conv.turns:
            self._due.setdefault(_key(_body(t)), []).append(conv.observations.get(t.dia_id, []))

    def extract(self, batch: Any) -> Any:
        from memstore.extract.prompts import ExtractionResult, MemoryOperation

        out = ExtractionResult()
        for i, view in enumerate(batch.turns):
            due = self._due.get(_key(view.user))
            for text in due.pop(0) if due else []:
                out.operations.append(MemoryOperation(op="ADD", text=text, kind="fact", turn=i,
                                                      reason="LoCoMo observation"))
        return out


def _key(text: str) -> str:
    return " ".join(text.split())[:300]


EXTRACTORS = ("heuristic", "llm", "observations")


def ingest_extract(mem: Memory, conv: Conversation, namespace: str = NAMESPACE,
                   extractor: str | None = None) -> dict[str, str]:
    """Every turn through the outbox and the configured extractor (``extractor="observations"``: the
    dataset's own observations, :class:`ObservationReplay`), in the conversation's scope (as raw mode), as a
    chat message of its speaker: recorded with its session, place, speaker and time, so that its memories
    (facts and, with ``MemoryConfig.episodes``, its episode) carry them. Returns outbox turn id -> dia_id."""
    from memstore.records import Turn as OutboxTurn
    from memstore.storage.db import session_scope
    from memstore.worker import drain

    mapping: dict[str, str] = {}
    with session_scope(mem.engine) as s:
        for t in conv.turns:
            row = OutboxTurn(user_id=conv.sample_id, namespace=namespace,
                             messages=[{"role": "user", "content": _body(t)}], response="",
                             status="pending", meta={"mode": "chat", "dia_id": t.dia_id,
                                                     "conversation": f"session-{t.session}", "position": t.index,
                                                     "speaker": t.speaker},
                             **({"created_at": t.date} if t.date else {}))
            s.add(row)
            mapping[row.id] = t.dia_id
    drain(mem.extraction, extractor=ObservationReplay(conv) if extractor == "observations" else None)
    return mapping


def _body(t: Turn) -> str:
    return t.text if not t.caption else f"{t.text} [shares {t.caption}]"


# ---- the run ----------------------------------------------------------------------------------------

Searcher = Callable[[str, Conversation, int], "list[MemoryHit]"]


def check_retrievers(retrievers: Sequence[str]) -> list[str]:
    """The retriever names, checked before any ingest: "library" (what Memory.search, MemoryClient and
    ``serve`` use) or a search preset (memstore.recall.search.PRESETS: the ablations)."""
    from memstore.recall.search import PRESETS

    names = list(dict.fromkeys(retrievers)) or ["library"]
    bad = [r for r in names if r != "library" and r not in PRESETS]
    if bad:
        raise ValueError(f"unknown retriever {', '.join(map(repr, bad))}: use library or one of "
                         f"{', '.join(sorted(PRESETS))}")
    return names


POOL_VIEWS = ("facts+episodes", "episodes", "facts")


def make_searcher(mem: Memory, retriever: str, mode: str, namespace: str = NAMESPACE,
                  view: str = "facts+episodes") -> Searcher:
    """``retriever``: "library" (Memory.search with the configured settings) or a search preset name. In
    extract mode the question searches the facts and the excerpts of past conversations in one list, as
    ``Memory.search(episodes=True)`` ranks them (``view``: "facts+episodes"), or one pool alone."""
    from memstore.recall.search import PRESETS
    from memstore.records import EPISODE

    preset = None if retriever == "library" else PRESETS[check_retrievers([retriever])[0]]
    if mode == "raw":
        return lambda q, conv, limit: mem.search(q, conv.sample_id, namespace, limit=limit, settings=preset)
    if view not in POOL_VIEWS:
        raise ValueError(f"view must be one of {', '.join(POOL_VIEWS)}")
    options: dict[str, Any] = {"facts+episodes": {"episodes": True}, "episodes": {"kind": EPISODE},
                               "facts": {}}[view]
    return lambda q, conv, limit: mem.search(q, conv.sample_id, namespace, limit=limit, settings=preset, **options)


def run_locomo(
    data: str | Path,
    mode: str = "raw",
    ks: Sequence[int] = DEFAULT_KS,
    retrievers: Sequence[str] = ("library",),
    text: str = "keyed",
    conversations: Sequence[int] | None = None,
    held_out_from: int | None = 3,
    store: str | Path | None = None,
    config: Any = None,
    show_progress: bool = True,
    embedder: Any = None,
    extractor: str | None = None,
) -> dict[str, Any]:
    """Ingests, asks every question and scores. One result block per retriever (same ingested store).
    ``extractor`` (extract mode): "heuristic", "llm" or "observations" (the dataset's observations replayed
    as the extractor's output); default: the config's."""
    from memstore.config import MemoryConfig
    from memstore.memory import Memory
    from memstore.recall.inject import render_block
    from memstore.recall.tokens import count_tokens

    if mode not in ("raw", "extract"):
        raise ValueError("mode must be raw or extract")
    if extractor is not None and extractor not in EXTRACTORS:
        raise ValueError(f"extractor must be one of {', '.join(EXTRACTORS)}")
    if text not in ("keyed", "plain"):
        raise ValueError("text must be keyed or plain")
    retrievers = check_retrievers(retrievers)
    ks = sorted(set(int(k) for k in ks))
    convs = load_locomo(data)
    chosen = list(range(len(convs))) if conversations is None else [i for i in conversations if i < len(convs)]
    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory(prefix="memstore-locomo-")
        store = tmp.name
    cfg = (config or MemoryConfig()).model_copy(update={"home": Path(store)})
    if extractor in ("heuristic", "llm"):
        cfg = cfg.model_copy(update={"extractor": extractor})
    mem = Memory(config=cfg, embedder=embedder)
    t_ingest = time.perf_counter()
    mappings: dict[int, dict[str, str]] = {}
    total_q = sum(len(convs[i].questions) for i in chosen)
    with progress(show_progress) as bar:
        task = bar.add_task(f"ingest ({mode})", total=len(chosen))
        for i in chosen:
            if mode == "raw":
                ingest_raw(mem, convs[i], keyed=(text == "keyed"))
            else:
                mappings[i] = ingest_extract(mem, convs[i], extractor=extractor)
            bar.advance(task)
        ingest_s = time.perf_counter() - t_ingest
        memories = {i: _memory_count(mem, convs[i], mode) for i in chosen}
        episodes = {i: _memory_count(mem, convs[i], mode, "episodes") for i in chosen}
        results: dict[str, Any] = {}
        views = [(r, v) for r in retrievers for v in (POOL_VIEWS if mode == "extract" and cfg.episodes
                                                    else ("facts",) if mode == "extract" else ("",))]
        for retriever, view in views:
            name = retriever if view in ("", "facts+episodes") or not cfg.episodes else f"{retriever}/{view}"
            _clear_query_cache(mem)  # every retriever pays for its own query embeddings
            searcher = make_searcher(mem, retriever, mode, view=view or "facts+episodes")
            qtask = bar.add_task(f"questions ({name})", total=total_q)
            rows: list[dict[str, Any]] = []
            for i in chosen:
                conv = convs[i]
                for q in conv.questions:
                    t0 = time.perf_counter()
                    hits = searcher(q.text, conv, max(ks))
                    latency = time.perf_counter() - t0
                    srcs = [_dia_sources(h, mappings.get(i)) for h in hits]
                    block: dict[str, Any] = {}
                    if retriever == "library" and view in ("", "facts+episodes"):
                        ctx = mem.context(conv.sample_id, q.text, NAMESPACE)
                        seen = [s for h in [*ctx.memories, *ctx.episodes] for s in _dia_sources(h, mappings.get(i))]
                        block = {"in_block": recall_at_k([seen], q.evidence, 1), "block_tokens": ctx.tokens}
                    rows.append({**block,
                        "conversation": conv.sample_id, "conv_index": i, "category": q.category,
                        "question": q.text, "evidence": q.evidence,
                        "recall": {k: recall_at_k(srcs, q.evidence, k) for k in ks},
                        "tokens": {k: count_tokens(render_block(
                            memories=[h.memory for h in hits[:k] if h.memory.kind != "episode"],
                            episodes=[h.memory for h in hits[:k] if h.memory.kind == "episode"]))
                            if hits[:k] else 0 for k in ks},
                        "latency_s": latency,
                        "top_sources": [s for src in srcs[:max(ks)] for s in src][:max(ks)],
                    })
                    bar.advance(qtask)
            results[name] = _summarise(rows, ks, held_out_from)
            results[name]["questions"] = rows
    if tmp is not None:
        tmp.cleanup()
    dropped = [d for i in chosen for d in convs[i].dropped_evidence]
    return {
        "benchmark": "locomo", "mode": mode, "text": text if mode == "raw" else "extracted", "ks": ks,
        "data": str(data), "conversations": [convs[i].sample_id for i in chosen],
        "held_out_from": held_out_from, "extractor": (extractor or cfg.extractor) if mode == "extract" else None,
        "questions": total_q, "turns": sum(len(convs[i].turns) for i in chosen),
        "memories": sum(memories.values()), "episodes": sum(episodes.values()),
        "episodes_searched": bool(mode == "extract" and cfg.episodes), "ingest_seconds": round(ingest_s, 2),
        "dropped_evidence_ids": dropped,
        "skipped_questions": sum(convs[i].skipped_questions for i in chosen),
        "reference": REFERENCE, "retrievers": results, "environment": environment(),
    }


def _summarise(rows: list[dict[str, Any]], ks: Sequence[int], held_out_from: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"all": aggregate(rows, ks)}
    if held_out_from is not None:
        tune = [r for r in rows if r["conv_index"] < held_out_from]
        held = [r for r in rows if r["conv_index"] >= held_out_from]
        if tune and held:
            out["tune"] = aggregate(tune, ks)
            out["held_out"] = aggregate(held, ks)
    return out


def _clear_query_cache(mem: Memory) -> None:
    cache = getattr(mem.store.embedder, "_cache", None)
    if cache is not None and hasattr(cache, "clear"):
        cache.clear()


def _memory_count(mem: Memory, conv: Conversation, mode: str, pool: str = "facts") -> int:
    return len(mem.store.list(conv.sample_id, NAMESPACE, pool=pool))


def _dia_sources(hit: MemoryHit, mapping: Mapping[str, str] | None) -> list[str]:
    ids = list(hit.memory.source_turn_ids or [])
    if mapping is None:
        return ids
    return [mapping[t] for t in ids if t in mapping]


# ---- presentation -----------------------------------------------------------------------------------

def print_report(result: Mapping[str, Any], out: Any = None) -> None:
    from rich.table import Table

    from memstore.eval.common import console, print_env

    out = out or console()
    ks = result["ks"]
    for name, res in result["retrievers"].items():
        table = Table(title=f"LoCoMo evidence recall, mode={result['mode']} text={result['text']} "
                            f"retriever={name}")
        table.add_column("split / category")
        table.add_column("questions", justify="right")
        for k in ks:
            table.add_column(f"recall@{k}", justify="right")
        for split in ("all", "tune", "held_out"):
            if split not in res:
                continue
            block = res[split]
            table.add_row(f"[bold]{split}[/]", str(block["overall"]["n"]),
                          *[f"{block['overall'][f'recall@{k}']:.1f}" for k in ks])
            if split == "all":
                for cat, cb in block["per_category"].items():
                    table.add_row(f"  {cat}", str(cb["n"]), *[f"{cb[f'recall@{k}']:.1f}" for k in ks])
        ref = result["reference"]["recall"]
        table.add_row("[dim]reference (DRAGON)[/]", "", *[f"[dim]{ref.get(k, '')}[/]" for k in ks])
        out.print(table)
        allb = res["all"]
        lat = allb.get("search_latency", {})
        tok = allb.get("tokens_per_question", {})
        out.print(f"search latency p50 {lat.get('p50_ms', 0):.1f} ms, p95 {lat.get('p95_ms', 0):.1f} ms; "
                  "injected tokens per question " + ", ".join(f"{k} {v}" for k, v in tok.items()))
        if "in_block" in allb:
            out.print(f"evidence inside the block Memory.context injects (default budget): "
                      f"{allb['in_block']['recall']:.1f}% at {allb['in_block']['tokens']:.0f} tokens per question")
    print_env(result["environment"], out)
