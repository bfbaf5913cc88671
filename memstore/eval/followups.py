"""Follow-up questions: does the injected block still hold the right memory when the latest message only
makes sense with the one before it ("I'm planning a trip to Lisbon" ... "what about the weather there?")?

A small hand-written set (memstore's own text, no dataset): one user with the facts below among synthetic
distractor memories, and two-message conversations whose second message leans on the first. Each is scored
by whether the memory the follow-up needs is inside the block ``Memory.context`` builds for the whole
conversation, with the query built from the conversation (the default) and from the latest message only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from memstore.eval.common import environment

USER = "followup-user"

# (memory the follow-up needs, the opening message, the follow-up)
CASES: list[tuple[str, str, str]] = [
    ("My sister Ana lives in Porto and works as a nurse.", "Can you help me plan a visit to my sister Ana?",
     "what does she do again?"),
    ("Ana's birthday is on 14 March.", "I want to send my sister Ana a present.", "when should it arrive?"),
    ("I am allergic to peanuts.", "Suggest a Thai dish for dinner tonight.", "anything I should avoid?"),
    ("I'm vegetarian since 2019.", "What should I cook for the family barbecue?", "and for me?"),
    ("My dog Rex is afraid of thunderstorms.", "There's a storm coming tonight.", "how do I help him?"),
    ("Rex needs his heartworm tablet on the first of every month.", "I'm writing my to-do list for the dog.",
     "what's due next month?"),
    ("I'm training for the Berlin marathon in September.", "Can you make me a running plan?",
     "how many weeks do I have?"),
    ("My left knee hurts after long runs.", "Plan my long run for Sunday.", "anything to watch out for?"),
    ("I work as a backend engineer at a logistics startup.", "Help me write my LinkedIn headline.",
     "mention my job?"),
    ("My manager is called Priya.", "I need to ask for a day off next Friday.", "who should I email?"),
    ("I'm learning Japanese and I'm at JLPT N4 level.", "Recommend me some reading practice.",
     "at my level?"),
    ("I drive a 2015 Toyota Corolla.", "My car makes a squeaking noise when I brake.", "is it common for mine?"),
    ("I live in a small flat in Lisbon with no balcony.", "I want to grow some herbs.", "where would they go?"),
    ("My son Leo is 7 and loves dinosaurs.", "What should we do this weekend with the kids?",
     "something for Leo?"),
    ("My daughter Mia is lactose intolerant.", "I'm baking a birthday cake for the kids' party.",
     "is that ok for Mia?"),
    ("I play the cello in a community orchestra on Tuesdays.", "Help me plan my week.", "and Tuesday evening?"),
    ("I prefer window seats on flights.", "Book me a flight to Madrid on Friday.", "which seat?"),
    ("I hate early mornings; I'm most productive after 10am.", "Schedule my deep-work blocks for tomorrow.",
     "what time should they start?"),
    ("My partner Sam is a chef at an Italian restaurant.", "What could I cook for our anniversary?",
     "would Sam like it?"),
    ("I'm saving for a house deposit, about 500 euros a month.", "Should I buy a new laptop this month?",
     "can I afford it?"),
    ("My mother has type 2 diabetes.", "I'm hosting my parents for dinner on Sunday.", "any dessert ideas for mum?"),
    ("I take the 8:15 train to work from Oriente station.", "I have a dentist appointment at 9 tomorrow.",
     "will I make my usual train?"),
    ("I'm colour-blind (red-green).", "Pick a colour scheme for my presentation slides.", "will I see them?"),
    ("My cat Miso is 14 years old and has kidney disease.", "What treats can I buy for my pets?",
     "and for the cat?"),
]

FILLER = ["I bought new running shoes last week.", "The weather in Lisbon was sunny all weekend.",
          "I watched a documentary about octopuses.", "My favourite board game is Carcassonne.",
          "I usually drink two coffees a day.", "I repainted the hallway grey.",
          "I read a novel about a lighthouse keeper.", "I fixed the leaking kitchen tap myself."]


def run_followups(distractors: int = 500, store: str | Path | None = None, embedder: Any = None,
                  config: Any = None) -> dict[str, Any]:
    """Hit rates of the memory each follow-up needs inside the injected block, conversation query vs
    latest-message query, over ``len(CASES)`` conversations and ``distractors`` synthetic memories."""
    from memstore.config import MemoryConfig
    from memstore.eval.bench.runs import sentences
    from memstore.memory import Memory
    from memstore.recall.context import build_context

    tmp = tempfile.TemporaryDirectory(prefix="memstore-followups-") if store is None else None
    home = Path(store if store is not None else tmp.name)  # type: ignore[union-attr]
    cfg = (config or MemoryConfig()).model_copy(update={"home": home})
    mem = Memory(config=cfg, embedder=embedder)
    facts = [c[0] for c in CASES] + FILLER
    items = [{"text": t, "kind": "fact"} for t in facts + sentences(distractors, seed=11)]
    mem.store.add_many(USER, "default", items, actor="import")
    ids = {r.text: r.id for r in mem.get_all(USER)}
    rows = []
    for needed, opening, follow in CASES:
        messages = [{"role": "user", "content": opening}, {"role": "assistant", "content": "Sure."},
                    {"role": "user", "content": follow}]
        conv = mem.context(USER, messages)
        latest = build_context(mem.retriever, mem.profiles, USER, "default", messages[-1:],
                               token_budget=cfg.token_budget, limit=cfg.search_limit)
        rows.append({"conversation": ids[needed] in conv.memory_ids, "latest_only": ids[needed] in latest.memory_ids,
                     "tokens": conv.tokens})
    if tmp is not None:
        tmp.cleanup()
    n = len(rows)
    return {"benchmark": "followups", "cases": n, "distractors": distractors, "memories": len(items),
            "token_budget": cfg.token_budget,
            "in_block": {"conversation_query": round(100 * sum(r["conversation"] for r in rows) / n, 1),
                         "latest_message_only": round(100 * sum(r["latest_only"] for r in rows) / n, 1)},
            "tokens_mean": round(sum(r["tokens"] for r in rows) / n, 1), "environment": environment()}
