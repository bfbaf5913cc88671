"""Extraction measurements for the LLM-free path: the gate and the heuristic extractor.

* :func:`locomo_observation_prf` -- on LoCoMo conversations, does the gate / extractor fire on exactly the
  turns the dataset's ``observation`` annotations cite? Each turn is fed alone, as one user message from
  its speaker; a turn is *predicted* fact-bearing when the gate opens (gate) or when gate + extractor
  yield at least one candidate (extractor). Turn-level precision, recall and F1, overall and per
  conversation, with the predict-every-turn baseline for scale.
* :func:`prefeval_gate_savings` -- on PrefEval, the share of ordinary chat turns (the distractor
  conversations of ``filtered_inter_turns.json``) the gate skips, i.e. extraction LLM calls saved, and
  the share of explicit preference statements it lets through (should be ~100%).

Both return plain JSON-serializable dicts. ``python -m memstore.eval.extraction locomo PATH`` and
``python -m memstore.eval.extraction prefeval DIR`` print them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from memstore.extract.gate import needs_extraction
from memstore.extract.heuristic import extract

__all__ = [
    "locomo_observation_prf",
    "parse_locomo_datetime",
    "prefeval_gate_savings",
    "score_turns",
]


def _ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


def score_turns(predicted: Iterable[str], gold: Iterable[str], universe: Iterable[str]) -> dict[str, Any]:
    """Precision/recall/F1 of the predicted turn ids against the gold ones, over all turn ids."""
    all_ids = set(universe)
    pred, true = set(predicted) & all_ids, set(gold) & all_ids
    tp, fp, fn = len(pred & true), len(pred - true), len(true - pred)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": len(all_ids) - tp - fp - fn,
    }


_LOCOMO_DT = re.compile(r"(?i)(\d{1,2}):(\d{2})\s*([ap]m)\s+on\s+(\d{1,2})\s+([a-z]+),?\s+(\d{4})")


def parse_locomo_datetime(text: str) -> datetime | None:
    """LoCoMo's session stamps, e.g. "1:56 pm on 8 May, 2023"; None when unparseable."""
    m = _LOCOMO_DT.search(text or "")
    if not m:
        return None
    hour, minute, ampm, day, month, year = m.groups()
    try:
        stamp = datetime.strptime(f"{day} {month[:3]} {year}", "%d %b %Y")
    except ValueError:
        return None
    h = int(hour) % 12 + (12 if ampm.lower() == "pm" else 0)
    return stamp.replace(hour=h, minute=int(minute))


def _cited_ids(observation: Mapping[str, Any]) -> set[str]:
    ids: set[str] = set()
    for per_session in observation.values():
        if not isinstance(per_session, Mapping):
            continue
        for facts in per_session.values():
            for fact in facts or []:
                if not isinstance(fact, list | tuple) or len(fact) < 2:
                    continue
                refs = fact[1] if isinstance(fact[1], list) else re.split(r"[,;\s]+", str(fact[1]))
                ids.update(str(r).strip() for r in refs if str(r).strip())
    return ids


def _turns(conversation: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], datetime | None]]:
    sessions = [k for k, v in conversation.items() if re.fullmatch(r"session_\d+", k) and isinstance(v, list)]
    for key in sorted(sessions, key=lambda k: int(k.split("_")[1])):
        stamp = parse_locomo_datetime(str(conversation.get(f"{key}_date_time", "")))
        for turn in conversation[key]:
            if isinstance(turn, Mapping) and "dia_id" in turn:
                yield dict(turn), stamp


def locomo_observation_prf(path: str | Path) -> dict[str, Any]:
    """Turn-level P/R/F1 of the gate and of gate + heuristic extractor against LoCoMo observations."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    per_conversation: list[dict[str, Any]] = []
    all_ids: set[str] = set()
    all_gold: set[str] = set()
    gate_pred: set[str] = set()
    extractor_pred: set[str] = set()
    kinds: Counter[str] = Counter()
    for n, sample in enumerate(data):
        sample_id = str(sample.get("sample_id", n))
        ids: set[str] = set()
        gate_hits: set[str] = set()
        extract_hits: set[str] = set()
        for turn, stamp in _turns(sample.get("conversation", {})):
            tid = f"{sample_id}/{turn['dia_id']}"
            ids.add(tid)
            messages = [{"role": "user", "content": str(turn.get("text", ""))}]
            if not needs_extraction(messages):
                continue
            gate_hits.add(tid)
            candidates = extract(messages, now=stamp)
            kinds.update(c.kind for c in candidates)
            if candidates:
                extract_hits.add(tid)
        gold = {f"{sample_id}/{d}" for d in _cited_ids(sample.get("observation", {}))}
        per_conversation.append(
            {
                "sample_id": sample_id,
                "turns": len(ids),
                "fact_bearing_turns": len(gold & ids),
                "extractor": score_turns(extract_hits, gold, ids),
                "gate": score_turns(gate_hits, gold, ids),
            }
        )
        all_ids |= ids
        all_gold |= gold & ids
        gate_pred |= gate_hits
        extractor_pred |= extract_hits
    return {
        "dataset": "locomo",
        "conversations": len(per_conversation),
        "turns": len(all_ids),
        "fact_bearing_turns": len(all_gold),
        "extractor": score_turns(extractor_pred, all_gold, all_ids),
        "gate": score_turns(gate_pred, all_gold, all_ids),
        "baseline_every_turn": score_turns(all_ids, all_gold, all_ids),
        "candidates_by_kind": dict(sorted(kinds.items())),
        "per_conversation": per_conversation,
    }


def _user_turns(chats: Iterable[Any]) -> Iterator[str]:
    for chat in chats:
        messages = chat.get("conversation", []) if isinstance(chat, Mapping) else chat
        for message in messages or []:
            if isinstance(message, Mapping) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    yield content


def prefeval_gate_savings(directory: str | Path) -> dict[str, Any]:
    """Share of PrefEval distractor turns the gate skips, and of explicit preference statements it passes."""
    root = Path(directory)
    distractors = json.loads((root / "filtered_inter_turns.json").read_text(encoding="utf-8"))
    turns = list(_user_turns(distractors))
    skipped = sum(1 for text in turns if not needs_extraction([{"role": "user", "content": text}]))
    per_topic: dict[str, dict[str, Any]] = {}
    total = passed = extracted = 0
    for file in sorted((root / "explicit_preference").glob("*.json")):
        items = json.loads(file.read_text(encoding="utf-8"))
        statements = [str(i["preference"]) for i in items if isinstance(i, Mapping) and i.get("preference")]
        topic_pass = topic_extract = 0
        for text in statements:
            messages = [{"role": "user", "content": text}]
            if needs_extraction(messages):
                topic_pass += 1
                topic_extract += bool(extract(messages))
        per_topic[file.stem] = {
            "statements": len(statements),
            "gate_pass_rate": _ratio(topic_pass, len(statements)),
            "extracted_rate": _ratio(topic_extract, len(statements)),
        }
        total += len(statements)
        passed += topic_pass
        extracted += topic_extract
    return {
        "dataset": "prefeval",
        "distractor_turns": len(turns),
        "gate_skipped": skipped,
        "skip_rate": _ratio(skipped, len(turns)),
        "preference_statements": total,
        "gate_passed": passed,
        "pass_rate": _ratio(passed, total),
        "extracted": extracted,
        "extracted_rate": _ratio(extracted, total),
        "per_topic": per_topic,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m memstore.eval.extraction", description=__doc__)
    parser.add_argument("benchmark", choices=["locomo", "prefeval"])
    parser.add_argument("path", help="locomo: the locomo JSON file; prefeval: the PrefEval data directory")
    parser.add_argument("--full", action="store_true", help="include per-conversation / per-topic rows")
    args = parser.parse_args(argv)
    if args.benchmark == "locomo":
        result = locomo_observation_prf(args.path)
        if not args.full:
            result.pop("per_conversation")
    else:
        result = prefeval_gate_savings(args.path)
        if not args.full:
            result.pop("per_topic")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
