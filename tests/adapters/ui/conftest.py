"""The web inspector in a real browser: Playwright for Python driving Debian's chromium.

Playwright's own browser download is unreachable here, so the browser is the system's chromium
(``MEMSTORE_CHROMIUM``, else ``/usr/bin/chromium`` or ``chromium`` on PATH), launched by ``executable_path``.
No chromium: the tests skip, unless ``MEMSTORE_REQUIRE_SERVERS=1`` (CI), where they fail.

Each test gets a fresh store (the ``config`` fixture: the selected backend, extraction by the scripted model),
the standalone inspector over it on a free port (uvicorn in a thread, with an extraction worker), an admin key,
and a new browser context.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from memstore.config import MemoryConfig
from memstore.memory import Memory
from memstore.storage.embed import HashEmbedder


def _required() -> bool:
    return os.environ.get("MEMSTORE_REQUIRE_SERVERS", "").strip().lower() in {"1", "true", "yes", "on"}


def chromium_path() -> str | None:
    given = os.environ.get("MEMSTORE_CHROMIUM", "").strip()
    if given:
        return given if os.path.exists(given) else None
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        reason = "chromium (or playwright) is not installed: apt-get install chromium; pip install playwright"
        if _required():
            pytest.fail(f"{reason} (MEMSTORE_REQUIRE_SERVERS=1)", pytrace=False)
        pytest.skip(reason)
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # root cannot sandbox
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=args)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Inspector:
    """A running inspector over ``mem``, its admin ``key``, and what the browser saw go wrong."""

    mem: Memory
    url: str
    key: str
    worker: Any
    dialogs: list[str] = field(default_factory=list)
    accept_dialogs: bool = True
    console_errors: list[str] = field(default_factory=list)

    def key_for(self, name: str, *, namespace: str | None = None, admin: bool = True) -> str:
        from memstore.adapters.server.keys import KeyStore

        return KeyStore(self.mem.engine).create(name, namespace, admin=admin)[1]

    def sign_in(self, page: Any, key: str | None = None) -> None:
        page.goto(f"{self.url}/ui/")
        page.get_by_label("Admin key").fill(key or self.key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{self.url}/ui/**")

    def open_user(self, page: Any, user: str, tab: str | None = None, ns: str = "default") -> None:
        from urllib.parse import urlencode

        page.goto(f"{self.url}/ui/memories?{urlencode({'user': user, 'ns': ns})}")
        if tab:
            page.get_by_role("navigation", name="User").get_by_role("link", name=tab).click()


@pytest.fixture
def ui_config(config: MemoryConfig) -> MemoryConfig:
    # one extraction attempt: a failed turn stays failed until someone retries it (no automatic retry racing
    # the test)
    return config.model_copy(update={"extraction_max_attempts": 1})


@pytest.fixture
def inspector(ui_config: MemoryConfig) -> Iterator[Inspector]:
    from memstore.adapters.server.keys import KeyStore
    from memstore.adapters.ui.standalone import ThreadedServer, create_app

    from memstore.worker import Worker

    mem = Memory(config=ui_config, embedder=HashEmbedder())
    _row, key = KeyStore(mem.engine).create("inspector-admin", admin=True)
    worker = Worker(mem.extraction, poll_interval=0.05).start()
    try:
        with ThreadedServer(create_app(mem, worker=worker)) as server:
            yield Inspector(mem=mem, url=server.url, key=key, worker=worker)
    finally:
        worker.stop()


@pytest.fixture
def page(browser: Any, inspector: Inspector) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()

    def on_dialog(dialog: Any) -> None:
        inspector.dialogs.append(f"{dialog.type}: {dialog.message}")
        if inspector.accept_dialogs:
            dialog.accept()
        else:
            dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("console", lambda msg: inspector.console_errors.append(msg.text) if msg.type == "error" else None)
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()
    # a blocked inline script or style (CSP), a script error: all show up here (a page answered with a 4xx on
    # purpose logs "Failed to load resource", which is no problem)
    assert [e for e in inspector.console_errors if "the server responded with a status of 4" not in e] == []
