"""docs/ stays true: the prompts, rendered blocks and settings it shows are the ones the code produces."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from memstore.config import MemoryConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_extraction_doc_shows_the_current_prompt_and_input() -> None:
    from memstore.extract.prompts import SYSTEM, ExistingItem, TurnView, extraction_messages

    doc = (DOCS / "extraction.md").read_text()
    assert SYSTEM in doc
    when = datetime(2026, 11, 20, tzinfo=UTC)
    msgs = extraction_messages(
        [TurnView(user="Quick update: we finally moved to Porto last month, so no more Lisbon for me. "
                       "Also I've gone vegan since January.",
                  assistant="Congratulations on the move! How are you finding Porto?", date=when),
         TurnView(user="And please stop ending your answers with questions, it's tiring.", assistant="Understood.",
                  date=when)],
        [ExistingItem(handle="m1", text="Lives in Lisbon", kind="fact"),
         ExistingItem(handle="m2", text="Is vegetarian", kind="preference"),
         ExistingItem(handle="m3", text="Has a daughter, Emma, born 2021", kind="fact")],
        [ExistingItem(handle="r1", text="Never use capital letters")], when)
    assert msgs[-1]["content"] in doc


def test_extraction_doc_shows_the_repair_exchange() -> None:
    from memstore.extract.prompts import ExtractionResult
    from memstore.llm import LLM
    from memstore.testing import ScriptedLLM

    first = ('{"operations": [{"op": "ADD", "text": "Plays the cello in an orchestra", "kind": "hobby", '
             '"turn": 0}], "instructions": []}')
    fixed = first.replace('"hobby"', '"fact"')
    with ScriptedLLM() as server:
        server.enqueue(first, fixed)
        llm = LLM("openai/scripted", api_base=server.base_url, api_key="k", max_retries=0)
        result = llm.structured([{"role": "user", "content": "the extraction input"}], ExtractionResult)
        sent = server.requests[-1].body["messages"]
    assert result.operations[0].kind == "fact"
    doc = (DOCS / "extraction.md").read_text()
    assert sent[-2] == {"role": "assistant", "content": first} and first in doc and fixed in doc
    assert sent[-1]["role"] == "user" and f"```text\n{sent[-1]['content']}\n```" in doc


def test_instructions_doc_shows_the_rendered_block(make_memory) -> None:
    from memstore.memory import Memory
    from memstore.storage.embed import HashEmbedder

    mem = Memory(config=MemoryConfig(), embedder=HashEmbedder())
    mem.set_instructions("alice", about_user="I'm a nurse in Porto and I cook a lot.", response_style="Warm but brief.")
    rules = mem.rules("alice")
    for text in ("Never use capital letters", "Don't end with a follow-up question",
                 "Answer in at most 3 bullet points", "Use metric units"):
        rules.add(text)
    mem.add("I am allergic to shellfish", user_id="alice", infer=False)
    mem.add("My name is Ana", user_id="alice", infer=False, pinned=True)
    from memstore.recall.inject import merge_split

    def elided(block: str) -> str:
        block = re.sub(r'id="[0-9a-f]{8}"', 'id="…"', block)
        return re.sub(r'date="\d{4}-\d\d-\d\d"', 'date="2026-11-23"', block)

    ctx = mem.context("alice", "Can I eat paella tonight?")
    doc = (DOCS / "instructions.md").read_text()
    stable, recall = elided(ctx.stable_block), elided(ctx.recall_block)
    assert f"```xml\n{stable}\n```" in doc and f"```xml\n{recall}\n```" in doc
    # the layout the doc describes: the default placement, three messages, and the "system" block
    assert MemoryConfig().injection == "split" and "| `split` (default) |" in doc
    app = {"role": "system", "content": "You are a cooking assistant."}
    user = {"role": "user", "content": "Can I eat paella tonight?"}
    assert f"`{json.dumps([app, user], ensure_ascii=False)}`" in doc
    assert merge_split([app, user], ctx.stable_block, ctx.recall_block) == [
        {"role": "system", "content": f"{app['content']}\n\n{ctx.stable_block}"},
        {"role": "system", "content": ctx.recall_block}, user]
    shellfish = next(line for line in recall.splitlines() if "shellfish" in line)
    pinned = next(line for line in stable.splitlines() if "My name is Ana" in line)
    assert elided(ctx.system_block) == stable.replace(pinned, f"{pinned}\n{shellfish}")


def test_configuration_doc_lists_every_setting() -> None:
    doc = (DOCS / "configuration.md").read_text()
    for name in MemoryConfig.model_fields:
        assert f"`{name}`" in doc and f"`MEMSTORE_{name.upper()}`" in doc, name


def test_readme_starts_with_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "pip install -e '.[dev]'" in first_block and "memstore demo" in first_block
    assert ".venv/bin/python -m pytest -q" in first_block
    assert ".venv/bin/python -m pytest -q" in (DOCS.parent / ".ci" / "run").read_text()
