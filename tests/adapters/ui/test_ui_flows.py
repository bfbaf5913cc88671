"""The inspector's flows, clicked through in chromium: instructions into the injection preview, editing a
memory and reading its history, deleting one, retrying a failed turn, rules, episodes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from memstore.errors import LLMError, NotFoundError
from memstore.recall.tokens import count_tokens


def test_instructions_show_up_in_the_injection_preview(inspector: Any, page: Any) -> None:
    mem = inspector.mem
    mem.add("I keep a vegetarian diet", user_id="alice", infer=False, kind="preference")
    inspector.sign_in(page)
    page.get_by_role("link", name="alice").click()
    page.get_by_role("navigation", name="User").get_by_role("link", name="Custom instructions").click()
    page.get_by_label("About you").fill("I teach chemistry at a secondary school in Porto.")
    page.get_by_label("How to respond").fill("Short answers, metric units.")
    page.get_by_role("button", name="Save instructions").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    assert mem.profile("alice").about_user == "I teach chemistry at a secondary school in Porto."

    page.get_by_role("link", name="See what would be injected").click()
    page.get_by_label("A message from this user").fill("What should I cook for dinner? Something vegetarian")
    page.get_by_role("button", name="Show what would be injected").click()
    # the default placement (split): instructions in the leading system message, recalled memories before the
    # latest message; each part shown as it is sent
    stable, recalled = page.get_by_label("The stable block"), page.get_by_label("The recalled block")
    expect(stable).to_contain_text("I teach chemistry at a secondary school in Porto.")
    expect(stable).to_contain_text("Short answers, metric units.")
    expect(recalled).to_contain_text("I keep a vegetarian diet")
    expected = mem.context("alice", "What should I cook for dinner? Something vegetarian")
    assert expected.tokens == count_tokens(expected.system_block)
    expect(page.locator(".tokens")).to_have_text(f"{expected.tokens} tokens")
    assert stable.text_content() == expected.stable_block and recalled.text_content() == expected.recall_block
    assert "message=What%20should%20I%20cook" in page.url  # htmx pushed the URL: the preview can be shared and reloaded

    # undo brings back the previous instructions, and the preview follows
    page.get_by_role("navigation", name="User").get_by_role("link", name="Custom instructions").click()
    page.get_by_role("button", name="Undo the last change").click()
    expect(page.get_by_label("About you")).to_have_value("")
    assert mem.profile("alice").about_user == ""


def test_edit_a_memory_and_read_its_history(inspector: Any, page: Any) -> None:
    mem = inspector.mem
    op = mem.add("Lives in Berlin", user_id="alice", infer=False)[0]
    mid = op.memory.id
    inspector.sign_in(page)
    inspector.open_user(page, "alice")
    page.get_by_role("link", name=re.compile("Edit & history")).click()
    page.get_by_label("Text").fill("Lives in Lisbon since May")
    page.get_by_label("Kind").select_option("event")
    page.get_by_label("Pinned (always injected)").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Memory updated")
    rec = mem.get(mid)
    assert (rec.text, rec.kind, rec.pinned) == ("Lives in Lisbon since May", "event", True)
    rows = page.locator("table.history tbody tr")
    expect(rows.first).to_contain_text("UPDATE")
    expect(rows.first.locator("del")).to_have_text("Lives in Berlin")
    expect(rows.first.locator("ins")).to_have_text("Lives in Lisbon since May")
    expect(rows.first).to_contain_text("edited in the web inspector")
    expect(rows.last).to_contain_text("ADD")
    assert [e.event for e in mem.history(mid)][-1] == "UPDATE"

    # no longer true, then restored: both in the history
    page.get_by_role("button", name="Mark no longer true").click()
    expect(page.get_by_role("status")).to_contain_text("no longer true")
    assert mem.get(mid).invalid_at is not None
    page.get_by_role("button", name="Restore").click()
    expect(page.get_by_role("status")).to_have_text("Memory restored.")
    assert mem.get(mid).invalid_at is None
    expect(page.locator("table.history tbody tr").first).to_contain_text("RESTORE")

    # searching and filtering the list (htmx swaps the list in place)
    mem.add("Plays the cello", user_id="alice", infer=False)
    page.get_by_role("link", name="← All memories").click()
    page.get_by_label("Search memories").fill("cello")
    expect(page.locator("#memory-list .count")).to_contain_text("matching “cello”")  # swapped in, no reload
    expect(page.locator("#memory-list .memory .text").first).to_have_text("Plays the cello")
    assert "q=cello" in page.url
    page.get_by_label("Search memories").fill("")
    page.get_by_label("Kind").select_option("event")
    expect(page.locator("#memory-list .memory .text")).to_have_text(["Lives in Lisbon since May"])


def test_empty_or_bad_edits_are_refused_and_lose_nothing(inspector: Any, page: Any) -> None:
    mem = inspector.mem
    mid = mem.add("Lives in Berlin", user_id="alice", infer=False)[0].memory.id
    inspector.sign_in(page)
    page.goto(f"{inspector.url}/ui/memory?id={mid}&user=alice")
    page.get_by_label("Text").evaluate("el => el.removeAttribute('required')")
    page.get_by_label("Text").fill("   ")
    page.get_by_label("Importance (0–1)").evaluate("el => { el.type = 'text'; }")
    page.get_by_label("Importance (0–1)").fill("lots")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("importance must be a number")
    assert mem.get(mid).text == "Lives in Berlin"


def test_delete_a_memory(inspector: Any, page: Any) -> None:
    mem = inspector.mem
    keep = mem.add("Has a dog called Rex", user_id="alice", infer=False)[0].memory.id
    gone = mem.add("Works at Acme", user_id="alice", infer=False)[0].memory.id
    inspector.sign_in(page)
    inspector.open_user(page, "alice")
    item = page.locator(".memory", has_text="Works at Acme")

    inspector.accept_dialogs = False  # asked first; saying no keeps it
    item.get_by_role("button", name="Delete").click()
    expect(page.locator(".memory")).to_have_count(2)
    assert mem.get(gone).text == "Works at Acme"

    inspector.accept_dialogs = True
    item.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Memory deleted. Its history is kept.")
    expect(page.locator(".memory .text")).to_have_text(["Has a dog called Rex"])
    with pytest.raises(NotFoundError):
        mem.get(gone)
    assert mem.get(keep).text == "Has a dog called Rex"
    assert any("Delete this memory?" in d for d in inspector.dialogs)
    # its history stays readable
    page.goto(f"{inspector.url}/ui/memory?id={gone}&user=alice")
    expect(page.locator(".flash")).to_contain_text("was deleted")
    expect(page.locator("table.history tbody tr").first).to_contain_text("DELETE")


def test_retry_a_failed_turn(inspector: Any, page: Any, llm: Any) -> None:
    mem = inspector.mem
    llm.default_reply = "this is not JSON"
    with pytest.raises(LLMError):
        mem.add("I live in Berlin and I play the cello", user_id="alice", infer=True)
    failed = mem.outbox.list(status="failed")
    assert len(failed) == 1

    inspector.sign_in(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Outbox").click()
    turn = page.locator(".turn", has_text="I live in Berlin")
    expect(turn).to_contain_text("failed")
    expect(turn.locator(".error-text")).to_contain_text("JSON")

    llm.enqueue(json.dumps({"operations": [{"op": "ADD", "text": "Lives in Berlin", "kind": "fact", "turn": 0}],
                            "instructions": []}))
    turn.get_by_role("button", name=re.compile("Retry")).click()
    expect(page.get_by_role("status")).to_contain_text("back in the outbox")
    assert inspector.worker.flush(timeout=60)
    assert mem.outbox.get(failed[0].id).status == "done"
    assert [m.text for m in mem.get_all("alice")] == ["Lives in Berlin"]
    page.reload()
    expect(page.locator(".turn")).to_have_count(0)  # no failed turn left
    inspector.open_user(page, "alice", "Outbox")
    expect(page.locator(".turn").first).to_contain_text("done")
    inspector.open_user(page, "alice")
    expect(page.locator(".memory .text")).to_have_text(["Lives in Berlin"])


def test_rules_proposals_and_compliance(inspector: Any, page: Any) -> None:
    mem = inspector.mem
    rules = mem.rules("alice")
    proposal = rules.add("Always answer in French", source="extracted", proposed=True)
    inspector.sign_in(page)
    inspector.open_user(page, "alice", "Style rules")
    page.get_by_label("New rule").fill("Never use emojis")
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_role("status")).to_have_text("Rule added.")
    added = next(r for r in rules.list() if r.text == "Never use emojis")
    expect(page.locator(".rule", has_text="Never use emojis")).to_contain_text(f"checker: {added.checker}")

    page.get_by_role("button", name="Accept “Always answer in French”").click()
    expect(page.get_by_role("status")).to_contain_text("accepted")
    assert rules.get(proposal.id).status == "active"

    mem.profiles.record_compliance("alice", "default", "r1", [(added, True, ""), ], 1)
    mem.profiles.record_compliance("alice", "default", "r2", [(added, False, "emoji found"), ], 1)
    page.reload()
    row = page.locator("table tr", has_text="Never use emojis")
    expect(row).to_contain_text("50%")

    page.locator(".rule", has_text="Never use emojis").get_by_role("button", name="Disable").click()
    assert rules.get(added.id).enabled is False


def test_episodes_tab_follows_the_kinds_memstore_has(inspector: Any, page: Any) -> None:
    from memstore import records

    inspector.sign_in(page)
    inspector.open_user(page, "alice")
    tabs = page.get_by_role("navigation", name="User")
    if "episode" not in records.KINDS:
        expect(tabs.get_by_role("link", name="Episodes")).to_have_count(0)
        return
    inspector.mem.add("We planned a trip to Kyoto in April", user_id="alice", infer=False, kind="episode")
    inspector.mem.add("Lives in Berlin", user_id="alice", infer=False)
    page.reload()
    expect(page.locator(".memory .text")).to_have_text(["Lives in Berlin"])  # episodes are not facts
    tabs.get_by_role("link", name="Episodes").click()
    expect(page.locator(".memory .text")).to_have_text(["We planned a trip to Kyoto in April"])
    expect(page.locator(".memory .badge", has_text="out of date")).to_have_count(0)
    # an exchange whose only fact was superseded since: its excerpt is kept, marked as left out of requests
    ops = inspector.mem.store.add_many("alice", "default", [
        {"text": "User: I work at the bakery on Rua Augusta", "kind": "episode", "source_turn_ids": ["t-bakery"]},
        {"text": "Works at the bakery on Rua Augusta", "kind": "fact", "source_turn_ids": ["t-bakery"]}],
        actor="import")
    inspector.mem.invalidate(ops[1].memory.id, user_id="alice", reason="changed jobs")
    page.reload()
    stale = page.locator(".memory", has_text="bakery on Rua Augusta")
    expect(stale.locator(".badge", has_text="out of date")).to_have_count(1)
    expect(page.locator(".memory", has_text="Kyoto").locator(".badge", has_text="out of date")).to_have_count(0)
