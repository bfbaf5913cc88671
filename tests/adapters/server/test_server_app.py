"""The proxy app in-process (starlette's TestClient as the openai SDK's HTTP client): modes that are awkward
to reach from outside a process, such as a failing memory layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from memstore.adapters.server.app import create_app
from memstore.adapters.server.state import ServerSettings
from starlette.testclient import TestClient

from memstore.storage.embed import HashEmbedder
from memstore.testing import ScriptedLLM


def _app(tmp_path: Path, llm: ScriptedLLM, **kwargs: Any) -> Any:
    settings = ServerSettings(home=str(tmp_path / "store"), upstream_base_url=llm.base_url, upstream_max_retries=0,
                              embedder=HashEmbedder(), extractor="heuristic", worker=False, warmup=False, **kwargs)
    return create_app(settings)


@pytest.fixture
def open_app(tmp_path: Path, llm: ScriptedLLM) -> Iterator[TestClient]:
    with TestClient(_app(tmp_path, llm, auth=False)) as tc:
        yield tc


def sdk(tc: TestClient, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=tc, max_retries=0, **kwargs)


def test_no_auth_mode_serves_without_keys(open_app: TestClient, llm: ScriptedLLM) -> None:
    open_app.post("/v1/memory/users/ann/memories", json={"text": "I am a pilot"})
    resp = sdk(open_app, default_headers={"X-Memstore-User": "ann"}).chat.completions.create(
        model="scripted-model", messages=[{"role": "user", "content": "what do I do for work?"}])
    assert resp.choices[0].message.content == "ok"
    assert "I am a pilot" in llm.requests[-1].body["messages"][0]["content"]
    assert open_app.get("/v1/memory/users/ann/memories").json()["data"][0]["namespace"] == "default"


def test_memory_failure_fails_open(open_app: TestClient, llm: ScriptedLLM) -> None:
    state = open_app.app.state.srv  # type: ignore[attr-defined]

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("index on fire")

    state.memory.context = broken
    raw = sdk(open_app).chat.completions.with_raw_response.create(
        model="scripted-model", messages=[{"role": "user", "content": "hi"}], user="ann")
    assert raw.parse().choices[0].message.content == "ok"
    assert raw.headers["x-memstore-failed-open"] == "retrieval-failed"  # a reason code; the detail is logged
    assert llm.requests[-1].body["messages"] == [{"role": "user", "content": "hi"}]
    metrics = open_app.get("/metrics").text
    assert any(line.startswith("memstore_fail_open_total ") and float(line.split()[1]) >= 1
               for line in metrics.splitlines())


def test_strict_mode_refuses_instead(tmp_path: Path, llm: ScriptedLLM) -> None:
    with TestClient(_app(tmp_path, llm, auth=False, strict=True)) as tc:
        def broken(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("index on fire")

        tc.app.state.srv.memory.context = broken  # type: ignore[attr-defined]
        with pytest.raises(openai.InternalServerError) as err:
            sdk(tc).chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}],
                                            user="ann")
        assert err.value.body["code"] == "memory_error"  # type: ignore[index]
        assert llm.requests == []


def test_wrong_method_and_bad_ids_are_openai_shaped(open_app: TestClient) -> None:
    wrong = open_app.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert open_app.get("/v1/memory/memories/does-not-exist").status_code == 404
    long_user = "u" * 300
    assert open_app.get(f"/v1/memory/users/{long_user}/memories").json()["error"]["param"] == "user_id"
    assert open_app.get("/v1/memory/users/ann/memories", headers={"X-Memstore-Namespace": " "}).status_code == 200
    assert open_app.get("/v1/memory/users/ann/memories?namespace=" + "n" * 300).status_code == 400


def test_keys_required_by_default_even_with_none_created(tmp_path: Path, llm: ScriptedLLM) -> None:
    with TestClient(_app(tmp_path, llm)) as tc:
        assert tc.get("/healthz").json()["status"] == "ok"
        refused = tc.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert refused.status_code == 401
        assert llm.requests == []
