"""memstore serve's limits, against a real server process with tight settings: request body size, message
count, per-key rate limits, the model allow-list."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from memstore.adapters.server.keys import open_keys

from memstore.testing import ScriptedLLM
from memstore.testing.server_process import ServerProcess

MAX_BODY = 20_000


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = open_keys(home=str(home))
    return {name: store.create(name)[1] for name in ("body", "count", "burst", "other", "retrying", "models")}


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str], upstream: ScriptedLLM) -> Iterator[ServerProcess]:
    args = ["--upstream-base-url", upstream.base_url, "--upstream-api-key", "k", "--upstream-max-retries", "0",
            "--extractor", "heuristic", "--no-worker",
            "--rate-limit", "1", "--rate-burst", "3", "--max-body-bytes", str(MAX_BODY), "--max-messages", "5",
            "--model", "scripted-model", "--allow-param", "top_k"]
    with ServerProcess(home, args) as srv:
        yield srv


def sdk(server: ServerProcess, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=retries)


def test_oversized_bodies_get_413(server: ServerProcess, keys: dict[str, str]) -> None:
    big = [{"role": "user", "content": "x" * (MAX_BODY + 1)}]
    with pytest.raises(openai.APIStatusError) as err:
        sdk(server, keys["body"]).chat.completions.create(model="scripted-model", messages=big)
    assert err.value.status_code == 413
    assert err.value.body["code"] == "request_too_large"  # type: ignore[index]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "scripted-model", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"}]}'

    time.sleep(1.1)
    resp = httpx.post(f"{server.base_url}/chat/completions", content=chunked(),
                      headers={"Authorization": f"Bearer {keys['body']}", "Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "invalid_request_error"
    time.sleep(1.1)
    memory = httpx.post(f"{server.url}/v1/memory/users/u/memories", json={"text": "z" * (MAX_BODY + 10)},
                        headers={"Authorization": f"Bearer {keys['body']}"})
    assert memory.status_code == 413


def test_too_many_messages_get_400(server: ServerProcess, keys: dict[str, str], upstream: ScriptedLLM) -> None:
    c = sdk(server, keys["count"])
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(6)]
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="scripted-model", messages=msgs)
    assert err.value.body["code"] == "too_many_messages" and err.value.body["param"] == "messages"  # type: ignore[index]
    c.chat.completions.create(model="scripted-model", messages=msgs[:5], extra_body={"top_k": 3})
    assert upstream.requests[-1].body["top_k"] == 3  # an allowed extra parameter reaches the upstream


def test_per_key_rate_limit_is_a_token_bucket(server: ServerProcess, keys: dict[str, str]) -> None:
    c = sdk(server, keys["burst"])
    msgs = [{"role": "user", "content": "hi"}]
    served = 0
    with pytest.raises(openai.RateLimitError) as err:
        for _ in range(30):  # the burst of 3 (plus whatever refilled meanwhile at 1/s), then a 429
            c.chat.completions.create(model="scripted-model", messages=msgs)
            served += 1
    assert served >= 3
    headers = err.value.response.headers
    assert int(headers["retry-after"]) >= 1 and 0 < int(headers["retry-after-ms"]) <= 1000
    assert err.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    # the memory API draws on the same bucket
    auth = {"Authorization": f"Bearer {keys['burst']}"}
    assert 429 in [httpx.get(f"{server.url}/v1/memory/users/u/memories", headers=auth).status_code for _ in range(5)]
    # another key has its own bucket
    sdk(server, keys["other"]).chat.completions.create(model="scripted-model", messages=msgs)
    # and the bucket refills at --rate-limit per second
    time.sleep(1.1)
    c.chat.completions.create(model="scripted-model", messages=msgs)


def test_sdk_retries_honour_retry_after(server: ServerProcess, keys: dict[str, str]) -> None:
    c = sdk(server, keys["retrying"], retries=5)
    started = time.monotonic()
    for _ in range(5):  # 3 from the burst, then the SDK waits out the 429s on its own
        c.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - started >= 1.5
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "memstore_server_rate_limited_total" in metrics


def test_only_listed_models_are_served(server: ServerProcess, keys: dict[str, str]) -> None:
    c = sdk(server, keys["models"])
    assert [m.id for m in c.models.list().data] == ["scripted-model"]
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert c.models.retrieve("scripted-model").id == "scripted-model"
