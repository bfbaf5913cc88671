"""Shared fixtures: a scripted model over real HTTP, and Memory stores in temporary homes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from memstore.config import MemoryConfig  # noqa: E402
from memstore.testing import ScriptedLLM  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test touches ~/.memstore or a user's MEMSTORE_* settings."""
    for key in list(os.environ):
        if key.startswith("MEMSTORE_") and key != "MEMSTORE_REQUIRE_SERVERS" and not key.startswith("MEMSTORE_TEST_"):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("MEMSTORE_HOME", str(home))
    return home


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    """A scripted OpenAI-compatible model on 127.0.0.1."""
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, llm: ScriptedLLM) -> MemoryConfig:
    """A config whose extraction model is the scripted server (reached through litellm)."""
    return MemoryConfig(home=tmp_path / "store", llm_model="openai/scripted", llm_api_base=llm.base_url,
                        llm_api_key="test-key", llm_max_retries=0)


@pytest.fixture
def make_memory(tmp_path: Path) -> Callable[..., Any]:
    """Builds a Memory in a fresh directory; keyword arguments go to MemoryConfig."""
    from memstore.memory import Memory

    counter = {"n": 0}

    def make(config: MemoryConfig | None = None, **kwargs: Any) -> Memory:
        counter["n"] += 1
        cfg = config or MemoryConfig(home=tmp_path / f"mem{counter['n']}", **kwargs)
        return Memory(config=cfg)

    return make


@pytest.fixture
def mem(config: MemoryConfig) -> Any:
    from memstore.memory import Memory

    return Memory(config=config)
