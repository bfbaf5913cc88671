"""What the proxy's test modules share: one scripted upstream and one store home per module, an upstream reset
before each test that asks for it, and `memstore serve` pointed at the upstream over a module's ``keys``
(made in the store before the server starts). A module that needs another server defines its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memstore.testing import ScriptedLLM
from memstore.testing.server_process import ServerProcess


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "-home")


@pytest.fixture
def fresh_upstream(upstream: ScriptedLLM) -> ScriptedLLM:
    """The module's upstream with no recorded requests, no scripted replies and "ok" as its answer."""
    upstream.clear()
    upstream.reply_fn = None
    upstream.default_reply = "ok"
    return upstream


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str], upstream: ScriptedLLM) -> Iterator[ServerProcess]:
    srv = ServerProcess(home, ["--upstream-base-url", upstream.base_url, "--upstream-api-key", "upstream-secret",
                               "--upstream-max-retries", "0", "--extractor", "heuristic", "--rate-limit", "0"])
    with srv:
        yield srv
