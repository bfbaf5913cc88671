"""``POST /v1/responses`` through memstore serve, and the rest of the OpenAI API (passed through or a 404 that
says what is served): a real server process, the real openai SDK as its client (sync, async, streaming, the
``responses.stream`` helper) and the scripted model over real HTTP as its upstream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from memstore.adapters.server.keys import open_keys
from openai.types.responses import Response, ResponseCompletedEvent, ResponseCreatedEvent, ResponseTextDeltaEvent

from memstore.testing import ScriptedLLM, ScriptedReply
from memstore.testing.server_process import ServerProcess

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.usefixtures("fresh_upstream")]


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = open_keys(home=str(home))
    out = {}
    for name, ns in (("app", None), ("team-a", "team-a")):
        _row, out[name] = store.create(name, ns)
    return out


def client(server: ServerProcess, key: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, **kwargs)


def api(server: ServerProcess, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)


def responses_requests(llm: ScriptedLLM) -> list[Any]:
    return [r for r in llm.requests if r.path == "/v1/responses"]


def wait_for_turns(server: ServerProcess, key: str, user: str, count: int, namespace: str | None = None,
                   timeout: float = 30.0) -> list[dict[str, Any]]:
    """The user's recorded turns (read through the memory API's export), once ``count`` of them exist."""
    headers = {"X-Memstore-Namespace": namespace} if namespace else {}
    deadline = time.monotonic() + timeout
    turns: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        exported = api(server, key, "GET", f"/v1/memory/users/{user}/export", headers=headers).json()
        turns = exported.get("turns") or []
        if len(turns) >= count:
            return turns
        time.sleep(0.1)
    raise AssertionError(f"{len(turns)} of {count} turns recorded for {user}")


def set_up_user(server: ServerProcess, key: str, user: str, namespace: str | None = None) -> None:
    headers = {"X-Memstore-Namespace": namespace} if namespace else {}
    assert api(server, key, "POST", f"/v1/memory/users/{user}/memories", headers=headers,
               json={"text": "I am allergic to peanuts"}).status_code in (200, 201)
    assert api(server, key, "POST", f"/v1/memory/users/{user}/rules", headers=headers,
               json={"text": "Never use capital letters"}).status_code in (200, 201)


# ---- /v1/responses ----------------------------------------------------------------------------------

def test_responses_non_stream_injects_into_instructions_and_records(server: ServerProcess, keys: dict[str, str],
                                                                     upstream: ScriptedLLM) -> None:
    set_up_user(server, keys["app"], "rita")
    upstream.enqueue("try a lentil curry.")
    raw = client(server, keys["app"]).responses.with_raw_response.create(
        model="scripted-model", input="what snack should I buy?", user="rita",
        instructions="You are a shopping helper.")
    resp = raw.parse()
    assert isinstance(resp, Response) and resp.output_text == "try a lentil curry."
    (sent,) = responses_requests(upstream)
    assert sent.body["instructions"].startswith("You are a shopping helper.")  # the caller's, then the block
    assert "allergic to peanuts" in sent.system_text + json.dumps(sent.body["input"])
    assert "Never use capital letters" in sent.body["instructions"]
    assert sent.headers["authorization"] == "Bearer upstream-secret"  # the server's key, not the proxy key
    assert raw.headers["x-memstore-user"] == "rita" and int(raw.headers["x-memstore-memories"]) >= 1
    assert resp.id == json.loads(raw.text)["id"] and resp.id.startswith("resp_")  # the upstream's own id
    (turn,) = wait_for_turns(server, keys["app"], "rita", 1)
    assert turn["response"] == "try a lentil curry." and turn["response_id"] == resp.id
    assert turn["messages"][-1]["content"] == "what snack should I buy?"


def test_responses_stream_is_complete_and_numbered(server: ServerProcess, keys: dict[str, str],
                                                   upstream: ScriptedLLM) -> None:
    set_up_user(server, keys["app"], "sam")
    upstream.enqueue("one two three")
    events = list(client(server, keys["app"]).responses.create(model="scripted-model", input="count", user="sam",
                                                               stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.index("response.output_text.delta") < kinds.index("response.output_text.done")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert isinstance(events[0], ResponseCreatedEvent) and isinstance(events[-1], ResponseCompletedEvent)
    assert "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)) == "one two three"
    assert events[-1].response.output_text == "one two three"  # type: ignore[union-attr]
    (sent,) = responses_requests(upstream)
    assert sent.body["stream"] is True and "Never use capital letters" in sent.body["instructions"]
    (turn,) = wait_for_turns(server, keys["app"], "sam", 1)
    assert turn["response"] == "one two three" and turn["response_id"] == events[-1].response.id  # type: ignore[union-attr]


def test_the_sdk_stream_helper_and_the_wire_format(server: ServerProcess, keys: dict[str, str],
                                                   upstream: ScriptedLLM) -> None:
    upstream.enqueue("alpha beta", "gamma")
    sdk = client(server, keys["app"])
    with sdk.responses.stream(model="scripted-model", input=[{"role": "user", "content": "greek?"}],
                              user="tom") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "alpha beta" and final.output_text == "alpha beta"
    raw = api(server, keys["app"], "POST", "/v1/responses",
              json={"model": "scripted-model", "input": "hi", "stream": True, "user": "tom"})
    assert raw.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in raw.text.split("\n\n") if b.strip()]
    for block in blocks:  # every event as OpenAI sends it: an event line naming the type, then its data
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
    assert "[DONE]" not in raw.text


def test_async_sdk_stream_and_create(server: ServerProcess, keys: dict[str, str], upstream: ScriptedLLM) -> None:
    upstream.enqueue("first.", "second.")

    async def main() -> tuple[str, list[str]]:
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key=keys["app"], max_retries=0)
        resp = await sdk.responses.create(model="scripted-model", input="one", user="uma")
        stream = await sdk.responses.create(model="scripted-model", input="two", user="uma", stream=True)
        kinds = [e.type async for e in stream]
        await sdk.close()
        return resp.output_text, kinds

    text, kinds = asyncio.run(main())
    assert text == "first." and kinds[-1] == "response.completed"
    assert [t["response"] for t in wait_for_turns(server, keys["app"], "uma", 2)] == ["first.", "second."]


def test_previous_response_id_conversation_and_store_reach_the_upstream(server: ServerProcess, keys: dict[str, str],
                                                                        upstream: ScriptedLLM) -> None:
    set_up_user(server, keys["app"], "vic")
    sdk = client(server, keys["app"])
    upstream.enqueue("Hi Vic.", "You said hi.", "kept nowhere")
    first = sdk.responses.create(model="scripted-model", input="hi, I am Vic", user="vic")
    second = sdk.responses.create(model="scripted-model", input="what did I say?", user="vic",
                                  previous_response_id=first.id, conversation="conv_42", store=True)
    assert second.previous_response_id == first.id
    a, b = responses_requests(upstream)
    assert b.body["previous_response_id"] == first.id and b.body["conversation"] == "conv_42"
    assert b.body["store"] is True
    assert b.history[0] == {"role": "user", "content": "hi, I am Vic"}  # the upstream found the earlier turn
    # the block is in every turn's instructions, once (instructions are not carried over by the API)
    assert a.body["instructions"].count("Never use capital letters") == 1
    assert b.body["instructions"].count("Never use capital letters") == 1
    unstored = sdk.responses.create(model="scripted-model", input="secret", user="vic", store=False)
    assert responses_requests(upstream)[-1].body["store"] is False
    with pytest.raises(openai.NotFoundError) as err:  # the upstream's own 404, passed on
        sdk.responses.create(model="scripted-model", input="and?", user="vic", previous_response_id=unstored.id)
    assert "not found" in err.value.message


def test_namespace_binding_and_memory_options(server: ServerProcess, keys: dict[str, str],
                                              upstream: ScriptedLLM) -> None:
    set_up_user(server, keys["team-a"], "wes")
    bound = client(server, keys["team-a"])
    with pytest.raises(openai.PermissionDeniedError) as err:
        bound.responses.create(model="scripted-model", input="hi", user="wes",
                               extra_body={"memory": {"namespace": "team-b"}})
    assert err.value.body["code"] == "namespace_forbidden"  # type: ignore[index]
    raw = bound.responses.with_raw_response.create(model="scripted-model", input="snack?",
                                                   extra_body={"memory": {"user_id": "wes"}})
    assert raw.headers["x-memstore-namespace"] == "team-a"
    assert "Never use capital letters" in responses_requests(upstream)[-1].body["instructions"]
    assert wait_for_turns(server, keys["team-a"], "wes", 1)
    off = bound.responses.create(model="scripted-model", input="no memory please", user="wes",
                                 instructions="Be brief.", extra_body={"memory": {"enabled": False}})
    assert off.output_text == "ok"
    assert responses_requests(upstream)[-1].body["instructions"] == "Be brief."
    assert "memory" not in responses_requests(upstream)[-1].body  # memstore's options stay here


def test_bad_requests_get_openai_shaped_errors(server: ServerProcess, keys: dict[str, str],
                                               upstream: ScriptedLLM) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"input": "hi"}, "model", "missing_required_parameter"),
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"model": "m", "input": 5}, "input", "invalid_type"),
        ({"model": "m", "input": [5]}, "input[0]", "invalid_type"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"model": "m", "input": [{"content": "x"}]}, "input[0].type", "missing_required_parameter"),
        ({"model": "m", "input": "x", "instructions": ["x"]}, "instructions", "invalid_type"),
        ({"model": "m", "input": "x", "api_base": "http://evil"}, "api_base", "unknown_parameter"),
        ({"model": "m", "input": "x", "memory": {"colour": 1}}, "memory.colour", "unknown_parameter"),
    ]
    for body, param, code in cases:
        resp = api(server, keys["app"], "POST", "/v1/responses", json=body)
        assert resp.status_code == 400, (body, resp.text)
        err = resp.json()["error"]
        assert (err["param"], err["code"]) == (param, code), body
    too_many = api(server, keys["app"], "POST", "/v1/responses",
                   json={"model": "m", "input": [{"role": "user", "content": "x"}] * 1001})
    assert too_many.json()["error"]["code"] == "too_many_messages"
    no_key = httpx.post(f"{server.base_url}/responses", json={"model": "m", "input": "x"}, timeout=30)
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    assert responses_requests(upstream) == []


def test_upstream_errors_keep_their_status_and_bodies_that_are_none_are_502(
        server: ServerProcess, keys: dict[str, str], upstream: ScriptedLLM) -> None:
    sdk = client(server, keys["app"])
    upstream.enqueue(ScriptedReply(status=429, error="slow down"))
    with pytest.raises(openai.RateLimitError):
        sdk.responses.create(model="scripted-model", input="x", user="xi")
    upstream.enqueue(ScriptedReply(status=401, error="bad upstream key"))
    with pytest.raises(openai.InternalServerError) as err:
        sdk.responses.create(model="scripted-model", input="x", user="xi")
    assert err.value.status_code == 502 and err.value.body["code"] == "upstream_auth_error"  # type: ignore[index]
    upstream.enqueue(ScriptedReply(body={"id": "resp_1", "output": None}))
    with pytest.raises(openai.InternalServerError) as err:
        sdk.responses.create(model="scripted-model", input="x", user="xi")
    assert err.value.status_code == 502 and "no 'output' list" in err.value.message


def test_upstream_breaking_mid_stream_ends_with_an_error_event(server: ServerProcess, keys: dict[str, str],
                                                               upstream: ScriptedLLM) -> None:
    upstream.enqueue(ScriptedReply(content="a b c d e f g", truncate_stream_after=5))
    events = list(client(server, keys["app"]).responses.create(model="scripted-model", input="x", user="yan",
                                                               stream=True))
    assert events[-1].type == "error" and "upstream" in events[-1].message  # type: ignore[union-attr]
    assert events[-1].sequence_number == len(events) - 1
    (turn,) = wait_for_turns(server, keys["app"], "yan", 1)
    assert turn["metadata"]["partial"] is True


def test_lenient_upstream_bodies_pass_through_serve(server: ServerProcess, keys: dict[str, str],
                                                    upstream: ScriptedLLM) -> None:
    """An upstream whose usage lacks a field the installed SDK declares, with extra and null fields."""
    def odd(payload: dict[str, Any]) -> dict[str, Any]:
        body = payload.get("response", payload)
        if isinstance(body.get("usage"), dict):
            body["usage"]["input_tokens_details"].pop("cache_write_tokens", None)
            body["usage"]["vendor_cost"] = 0.25
        body.pop("service_tier", None)
        body["truncation"] = None
        return payload

    upstream.enqueue(ScriptedReply("fine", edit=odd), ScriptedReply("fine too", edit=odd))
    sdk = client(server, keys["app"])
    raw = sdk.responses.with_raw_response.create(model="scripted-model", input="x", user="zed")
    assert raw.parse().output_text == "fine"
    body = json.loads(raw.text)
    assert "cache_write_tokens" not in body["usage"]["input_tokens_details"]  # as the upstream sent it
    assert body["usage"]["vendor_cost"] == 0.25 and body["truncation"] is None and "service_tier" not in body
    events = list(sdk.responses.create(model="scripted-model", input="y", user="zed", stream=True))
    assert events[-1].response.output_text == "fine too"  # type: ignore[union-attr]
    assert len(wait_for_turns(server, keys["app"], "zed", 2)) == 2


# ---- the rest of the API ----------------------------------------------------------------------------

def test_embeddings_are_passed_through_with_the_server_key(server: ServerProcess, keys: dict[str, str],
                                                           upstream: ScriptedLLM) -> None:
    emb = client(server, keys["app"]).embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    (sent,) = [r for r in upstream.requests if r.path == "/v1/embeddings"]
    assert sent.headers["authorization"] == "Bearer upstream-secret"
    assert keys["app"] not in json.dumps(sent.headers)  # the proxy key never leaves the server
    refused = httpx.post(f"{server.base_url}/embeddings", json={"model": "e", "input": "a"}, timeout=30)
    assert refused.status_code == 401  # passing through still needs a proxy key
    assert len([r for r in upstream.requests if r.path == "/v1/embeddings"]) == 1


def test_stored_responses_are_not_passed_through_by_default(server: ServerProcess, keys: dict[str, str],
                                                             upstream: ScriptedLLM) -> None:
    """Stored responses live in the operator's one upstream account, outside the namespaces: by id, a key bound
    to team-a could read or delete another namespace's. They are opt-in (--passthrough responses)."""
    sdk = client(server, keys["app"])
    sdk.responses.create(model="scripted-model", input="x")
    n = len(upstream.requests)
    for method in ("GET", "DELETE"):
        resp = api(server, keys["team-a"], method, "/v1/responses/resp_abc")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_url"
        assert "/v1/responses/resp_abc" in resp.json()["error"]["message"]
    assert len(upstream.requests) == n  # nothing reached the upstream


def test_passthrough_option_opts_in_to_stored_responses(home: Path, keys: dict[str, str],
                                                        upstream: ScriptedLLM) -> None:
    args = ["--upstream-base-url", upstream.base_url, "--upstream-max-retries", "0", "--extractor", "heuristic",
            "--rate-limit", "0", "--no-worker", "--passthrough", "responses", "--passthrough", "/v1/conversations"]
    with ServerProcess(home, args) as srv:
        missing = api(srv, keys["app"], "GET", "/v1/responses/resp_abc")
        assert missing.status_code == 404  # the scripted upstream has no retrieve route: its 404, passed on
        assert upstream.requests[-1].path == "/v1/responses/resp_abc" and upstream.requests[-1].method == "GET"
        emb = api(srv, keys["app"], "POST", "/v1/embeddings", json={"model": "e", "input": "a"})
        assert emb.status_code == 404 and emb.json()["error"]["code"] == "unknown_url"  # the list replaced it
        assert "/v1/responses, /v1/conversations" in emb.json()["error"]["message"]


@pytest.mark.parametrize("value", ["memory", "bad path!", ""])
def test_passthrough_option_refuses_bad_prefixes(home: Path, value: str) -> None:
    out = subprocess.run([sys.executable, "-m", "memstore.cli", "--home", str(home), "serve", "--passthrough", value],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--passthrough" in out.stderr and "Traceback" not in out.stderr


def test_unknown_endpoints_get_a_404_that_lists_what_is_served(server: ServerProcess, keys: dict[str, str],
                                                               upstream: ScriptedLLM) -> None:
    for method, path in (("GET", "/v1/files"), ("POST", "/v1/fine_tuning/jobs"), ("GET", "/v2/anything"),
                         ("GET", "/v1/memory/nowhere")):
        resp = api(server, keys["app"], method, path)
        assert resp.status_code == 404, path
        err = resp.json()["error"]
        assert set(err) >= {"message", "type", "code"} and err["code"] == "unknown_url"
        assert f"{method} {path}" in err["message"]
        assert "POST /v1/responses" in err["message"] and "/v1/embeddings" in err["message"]
    with pytest.raises(openai.NotFoundError):
        client(server, keys["app"]).files.list()
    assert upstream.requests == []  # nothing unlisted reached the upstream
    wrong = api(server, keys["app"], "GET", "/v1/responses")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_the_docs_example_runs(server: ServerProcess, keys: dict[str, str], upstream: ScriptedLLM,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """docs/server.md's Responses example, run as written against serve (only the address and key differ)."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "server.md").read_text()
    section = doc.split("### The Responses API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'base_url="http://127.0.0.1:8765/v1", api_key="msk_..."' in code
    code = code.replace("http://127.0.0.1:8765/v1", server.base_url).replace("msk_...", keys["app"])
    set_up_user(server, keys["app"], "alice")
    upstream.enqueue("lentil curry.", "an omelette.")
    exec(compile(code, "docs/server.md", "exec"), {})
    assert capsys.readouterr().out == "lentil curry.\nan omelette.\n"
    first, second = responses_requests(upstream)
    assert first.body["instructions"].startswith("You are a cooking assistant.")
    assert "Never use capital letters" in second.body["instructions"]
    assert second.body["previous_response_id"] and second.body["stream"] is True
    assert [t["response"] for t in wait_for_turns(server, keys["app"], "alice", 2)] == ["lentil curry.",
                                                                                       "an omelette."]
