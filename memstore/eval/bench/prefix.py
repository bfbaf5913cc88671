"""``memstore bench prefix``: how much of each request a provider's prompt cache can reuse, per placement.

A real MemoryClient, over a store holding one user's custom instructions, rules, pinned facts and memories
(prefix_data.py), replays a 20-turn conversation against the scripted upstream (memstore.testing), once per
``MemoryConfig.injection`` placement, and keeps what reached the upstream. Each request is rendered as the
model reads it (ChatML: role and content of each message in order) and tokenized with tiktoken's cl100k_base,
as memstore/recall/tokens.py counts tokens. For every request after the first:

* ``prefix``: the token-level longest common prefix with the previous request: what a prefix cache could
  reuse at best;
* ``openai_cached``: what OpenAI's rule would bill as cached: nothing below 1,024 common tokens, then the
  common prefix rounded down to a multiple of 128 (1,024, 1,152, ...).

Shares are of the request's prompt tokens; totals weight each request by its size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memstore.eval.bench import prefix_data as data
from memstore.eval.common import environment, progress

OPENAI_MIN_CACHED = 1024
OPENAI_CACHE_STEP = 128
PLACEMENTS = ("split", "system")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def openai_cached(prefix: int) -> int:
    """Tokens OpenAI bills as cached for a common prefix of ``prefix`` tokens: none below 1,024, then in
    128-token steps."""
    if prefix < OPENAI_MIN_CACHED:
        return 0
    return prefix // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def prompt_text(body: dict[str, Any]) -> str:
    """A chat (``messages``) or Responses (``instructions`` + ``input``) request as the model reads it."""
    if "messages" in body:
        messages = body["messages"]
    else:
        messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
        items = body.get("input")
        messages += [{"role": "user", "content": items}] if isinstance(items, str) else list(items or [])
    return "".join(f"<|im_start|>{m.get('role')}\n{_text(m.get('content'))}<|im_end|>\n" for m in messages)


def tokenize(text: str) -> list[int]:
    """cl100k_base token ids (litellm's bundled tiktoken, as memstore.recall.tokens); without tiktoken, one
    pseudo-token per 4 characters, as its fallback count."""
    from memstore.recall.tokens import _encoding

    enc = _encoding()
    if enc is None:
        return [hash(text[i:i + 4]) for i in range(0, len(text), 4)]
    return list(enc.encode(text, disallowed_special=()))


def prefix_figures(bodies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per request: prompt tokens, the common prefix with the previous request and what OpenAI would bill as
    cached; and the totals over every request after the first."""
    rows: list[dict[str, Any]] = []
    prev: list[int] | None = None
    for i, body in enumerate(bodies, 1):
        toks = tokenize(prompt_text(body))
        lcp = common_prefix(prev, toks) if prev is not None else 0
        cached = openai_cached(lcp)
        rows.append({"request": i, "prompt_tokens": len(toks), "prefix_tokens": lcp,
                     "prefix_share": round(lcp / len(toks), 4) if toks else 0.0,
                     "openai_cached_tokens": cached,
                     "openai_cached_share": round(cached / len(toks), 4) if toks else 0.0})
        prev = toks
    later = rows[1:]
    prompt = sum(r["prompt_tokens"] for r in later)
    lcp_sum = sum(r["prefix_tokens"] for r in later)
    cached_sum = sum(r["openai_cached_tokens"] for r in later)
    return {
        "requests": rows,
        "prompt_tokens": prompt,
        "prefix_tokens": lcp_sum,
        "openai_cached_tokens": cached_sum,
        "prefix_share": round(lcp_sum / prompt, 4) if prompt else 0.0,
        "openai_cached_share": round(cached_sum / prompt, 4) if prompt else 0.0,
        "mean_prefix_share": round(sum(r["prefix_share"] for r in later) / len(later), 4) if later else 0.0,
    }


def seed(mem: Any) -> None:
    """The benchmark user's store: custom instructions, rules, pinned facts and memories."""
    mem.set_instructions(data.USER, about_user=data.ABOUT_USER, response_style=data.RESPONSE_STYLE)
    rules = mem.rules(data.USER)
    for text in data.RULES:
        rules.add(text)
    for text in data.PINNED:
        mem.add(text, user_id=data.USER, infer=False, pinned=True)
    for text in data.MEMORIES:
        mem.add(text, user_id=data.USER, infer=False)


def replay(placement: str, home: Path, embedder: Any, on_request: Any = None) -> list[dict[str, Any]]:
    """Replays the conversation through a MemoryClient with ``placement``; returns the request bodies that
    reached the upstream, in order."""
    from memstore.adapters.openai.client import MemoryClient
    from memstore.config import MemoryConfig
    from memstore.memory import Memory
    from memstore.testing import ScriptedLLM

    mem = Memory(config=MemoryConfig(home=home, injection=placement, extractor="heuristic"), embedder=embedder)
    seed(mem)
    with ScriptedLLM() as llm:
        client = MemoryClient(memory=mem, base_url=llm.base_url, api_key="bench", start_worker=False)
        try:
            history: list[dict[str, Any]] = [{"role": "system", "content": data.APP_PROMPT}]
            for question, answer in data.CONVERSATION:
                history = [*history, {"role": "user", "content": question}]
                llm.enqueue(answer)
                reply = client.chat.completions.create(model="scripted-model", user=data.USER, messages=history,
                                                       extra_body={"memory": {"extract": False}})
                history = [*history, {"role": "assistant", "content": reply.choices[0].message.content}]
                if on_request is not None:
                    on_request()
            bodies = [r.body for r in llm.requests if r.path.endswith("/chat/completions")]
        finally:
            client.close()
    if len(bodies) != len(data.CONVERSATION):
        raise RuntimeError(f"expected {len(data.CONVERSATION)} chat requests upstream, saw {len(bodies)}")
    return bodies


def bench_prefix(embedder: str = "minilm", show_progress: bool = True) -> dict[str, Any]:
    """Both placements on the same conversation and store (a fresh copy each): prefix figures, and whether the
    leading system message stayed byte-identical across the conversation."""
    from memstore.storage.embed import HashEmbedder

    if embedder not in ("minilm", "hash"):
        raise ValueError(f"embedder must be minilm or hash, not {embedder!r}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memstore-bench-prefix-") as tmp, progress(show_progress) as bar:
        for placement in PLACEMENTS:
            task = bar.add_task(f"{placement} placement", total=len(data.CONVERSATION))
            bodies = replay(placement, Path(tmp) / placement, HashEmbedder() if embedder == "hash" else None,
                            on_request=lambda task=task: bar.advance(task))
            figures = prefix_figures(bodies)
            firsts = {b["messages"][0]["content"] for b in bodies}
            figures["leading_system_variants"] = len(firsts)
            figures["injected_messages"] = sum(len(b["messages"]) for b in bodies) - sum(
                2 * i for i in range(1, len(bodies) + 1))  # beyond the app prompt and the history
            results[placement] = figures
    return {"benchmark": "prefix", "turns": len(data.CONVERSATION), "embedder": embedder,
            "memories": len(data.MEMORIES) + len(data.PINNED), "rules": len(data.RULES),
            "openai_rule": {"min_tokens": OPENAI_MIN_CACHED, "step": OPENAI_CACHE_STEP},
            "tokenizer": "cl100k_base (tiktoken, litellm's bundled copy)",
            "placements": results, "environment": environment()}


def print_prefix(result: dict[str, Any]) -> None:
    from rich.table import Table

    from memstore.eval.common import console

    out = console()
    table = Table(title=f"prompt tokens reused from the previous request, requests 2-{result['turns']}",
                  caption="prefix: token-level common prefix; OpenAI cached: from 1,024 tokens, in 128-token "
                          "steps; mean: of per-request shares; first msgs: distinct leading system messages")
    for name in ("placement", "prompt", "prefix", "share", "mean", "OpenAI cached", "share ", "first msgs"):
        table.add_column(name, justify="left" if name == "placement" else "right")
    for name, f in result["placements"].items():
        table.add_row(name, str(f["prompt_tokens"]), str(f["prefix_tokens"]), f"{f['prefix_share']:.1%}",
                      f"{f['mean_prefix_share']:.1%}", str(f["openai_cached_tokens"]),
                      f"{f['openai_cached_share']:.1%}", str(f["leading_system_variants"]))
    out.print(table)
    rows = Table(title="per request: common prefix / prompt tokens (OpenAI cached)")
    rows.add_column("request", justify="right")
    for name in result["placements"]:
        rows.add_column(name, justify="right")
    per = [result["placements"][n]["requests"] for n in result["placements"]]
    for i in range(len(per[0])):
        rows.add_row(str(i + 1), *(f"{p[i]['prefix_tokens']} / {p[i]['prompt_tokens']} "
                                   f"({p[i]['openai_cached_tokens']})" for p in per))
    out.print(rows)
