"""Screenshots of the inspector's main pages for the docs: ``python -m memstore.adapters.ui.screenshots``.

Builds a demo store in a temporary directory (made-up users, memories, instructions, rules, a failed turn),
serves the inspector over it, signs in with an admin key and saves PNGs (desktop and phone widths) to
``docs/img`` (or ``--out DIR``). Needs Playwright for Python and a chromium (``--chromium PATH``, else
``MEMSTORE_CHROMIUM``, else ``chromium`` on PATH); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def seed(mem: Any) -> None:
    """A small, made-up store that shows every page at work."""
    add = mem.add
    add("Lives in Berlin", user_id="alice", infer=False)
    add("Is vegetarian", user_id="alice", infer=False, kind="preference", pinned=True)
    add("Teaches chemistry at a secondary school", user_id="alice", infer=False)
    add("Prefers metric units", user_id="alice", infer=False, kind="preference")
    add("Ran the Porto half marathon in March 2026", user_id="alice", infer=False, kind="event")
    add("Has a cat called Ziggy", user_id="alice", infer=False)
    moved = add("Lives in Lisbon since May 2026", user_id="alice", infer=False, kind="event")[0].memory
    berlin = next(m for m in mem.get_all("alice") if m.text == "Lives in Berlin")
    mem.invalidate(berlin.id, user_id="alice", superseded_by=moved.id, reason="moved to Lisbon", actor="llm")
    cat = next(m for m in mem.get_all("alice") if m.text == "Has a cat called Ziggy")
    mem.update(cat.id, "Has two cats, Ziggy and Stardust", user_id="alice", actor="user",
               reason="edited in the web inspector")
    mem.set_instructions("alice", about_user="I teach chemistry and run in my spare time. I live in Lisbon.",
                         response_style="Short answers. Metric units. No emojis.", actor="user")
    rules = mem.rules("alice")
    emojis = rules.add("Never use emojis")
    rules.add("Keep answers under 120 words")
    rules.add("Always answer in Portuguese", source="extracted", proposed=True)
    mem.profiles.record_compliance("alice", "default", "resp-1", [(emojis, True, "")])
    mem.profiles.record_compliance("alice", "default", "resp-2", [(emojis, True, "")])
    mem.profiles.record_compliance("alice", "default", "resp-3", [(emojis, False, "found 1 emoji")])
    add("Works as a nurse in Oslo", user_id="bob", infer=False)
    add("Allergic to peanuts", user_id="bob", infer=False, kind="preference", pinned=True)
    add("Collects vinyl records", user_id="carol", namespace="shop", infer=False)
    turn = mem.outbox.record("alice", "default", [{"role": "user", "content": "I just adopted a second cat!"}],
                             "Congratulations! What is its name?")
    mem.outbox.mark([turn], "failed", "LLMError: the model answered with something that is not valid JSON "
                    "(after 3 attempts)", attempted=True)
    mem.outbox.record("bob", "default", [{"role": "user", "content": "Any tips for night shifts?"}], "Sure...",
                      extract=False)


def chromium(path: str | None = None) -> str:
    found = path or os.environ.get("MEMSTORE_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if not found:
        raise SystemExit("no chromium found: apt-get install chromium, or pass --chromium PATH")
    return found


def take(out: Path, browser_path: str | None = None) -> list[Path]:
    """Seeds a temporary store, serves the inspector and saves the screenshots; returns the files."""
    from memstore.adapters.server.keys import KeyStore
    from memstore.adapters.ui.standalone import ThreadedServer, create_app
    from playwright.sync_api import sync_playwright

    from memstore.config import MemoryConfig
    from memstore.memory import Memory

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="memstore-shots-") as home:
        mem = Memory(config=MemoryConfig(home=home, extractor="heuristic"))
        seed(mem)
        key = KeyStore(mem.engine).create("support", admin=True)[1]
        with ThreadedServer(create_app(mem)) as server, sync_playwright() as pw:
            args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
            browser = pw.chromium.launch(executable_path=chromium(browser_path), args=args)
            for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                context = browser.new_context(viewport=viewport, device_scale_factor=1)
                page = context.new_page()
                page.goto(f"{server.url}/ui/login")
                page.get_by_label("Admin key").fill(key)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(f"{server.url}/ui/")
                alice = {"user": "alice", "ns": "default"}
                shots = [("users", "/ui/", {}), ("memories", "/ui/memories", {**alice, "status": "all"}),
                         ("preview", "/ui/preview", {**alice, "message": "What should I cook tonight?"})]
                if size_name == "desktop":
                    cat = next(m for m in mem.get_all("alice") if "cats" in m.text)
                    shots += [("history", "/ui/memory", {**alice, "id": cat.id}),
                              ("instructions", "/ui/instructions", alice), ("rules", "/ui/rules", alice),
                              ("outbox", "/ui/outbox", {})]
                for name, path, params in shots:
                    page.goto(server.url + path + (f"?{urlencode(params)}" if params else ""))
                    target = out / f"ui-{name}-{size_name}.png"
                    page.screenshot(path=str(target), full_page=size_name == "desktop" or name == "memories")
                    saved.append(target)
                context.close()
            browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memstore.adapters.ui.screenshots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="where to save the PNGs (docs/img)")
    parser.add_argument("--chromium", help="the chromium executable (default: MEMSTORE_CHROMIUM or PATH)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("needs Playwright for Python: pip install playwright (no browser download needed)", file=sys.stderr)
        return 1
    for path in take(args.out, args.chromium):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
