"""memstore serve, end to end: a real server process on 127.0.0.1, the real openai SDK (sync, async,
streaming) as its client, and the scripted model as its upstream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from memstore.adapters.server.keys import open_keys

from memstore.testing import ScriptedLLM, ScriptedReply
from memstore.testing.server_process import ServerProcess

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.usefixtures("fresh_upstream")]


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    """Made before the server starts, in its database (the CLI's code path, minus the CLI)."""
    store = open_keys(home=str(home))
    out = {}
    for name, ns in (("app", None), ("team-a", "team-a"), ("team-b", "team-b"), ("doomed", None)):
        _row, out[name] = store.create(name, ns)
    return out


def client(server: ServerProcess, key: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, **kwargs)


def api(server: ServerProcess, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{server.url}/v1/memory{path}", headers=headers, timeout=60, **kwargs)


def chat_requests(llm: ScriptedLLM) -> list[Any]:
    return [r for r in llm.requests if r.path == "/v1/chat/completions"]


def wait_until(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


# ---- the proxy --------------------------------------------------------------------------------------

def test_health_and_models(server: ServerProcess, keys: dict[str, str]) -> None:
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["worker"] is True
    models = client(server, keys["app"]).models.list()
    assert "scripted-model" in [m.id for m in models.data]


def test_rule_and_memory_set_through_the_api_reach_the_upstream(server: ServerProcess, keys: dict[str, str],
                                                                 upstream: ScriptedLLM) -> None:
    key = keys["app"]
    added = api(server, key, "POST", "/users/alice/memories", json={"text": "I am vegetarian"})
    assert added.status_code == 201, added.text
    memory_id = added.json()["data"][0]["memory"]["id"]
    assert api(server, key, "POST", "/users/alice/rules", json={"text": "never use emoji"}).status_code == 201
    upstream.enqueue("Try a lentil curry.")

    raw = client(server, key).chat.completions.with_raw_response.create(
        model="scripted-model", messages=[{"role": "user", "content": "what should I cook tonight?"}], user="alice")
    resp = raw.parse()

    assert resp.choices[0].message.content == "Try a lentil curry."
    sent = upstream.requests[-1].body
    system, recalled = sent["messages"][0], sent["messages"][1]  # MemoryConfig.injection="split"
    assert system["role"] == recalled["role"] == "system"
    assert "never use emoji" in system["content"] and "I am vegetarian" in recalled["content"]
    assert sent["messages"][2] == {"role": "user", "content": "what should I cook tonight?"}
    assert sent["user"] == "alice"
    assert upstream.requests[-1].headers["authorization"] == "Bearer upstream-secret"  # the key stays server-side
    assert raw.headers["x-memstore-user"] == "alice"
    assert memory_id in raw.headers["x-memstore-memory-ids"]
    assert int(raw.headers["x-memstore-injected-tokens"]) > 0
    assert float(raw.headers["x-memstore-retrieval-ms"]) > 0
    assert raw.headers["x-memstore-turn-id"]


def test_user_by_header_and_no_user_means_no_memory(server: ServerProcess, keys: dict[str, str],
                                                   upstream: ScriptedLLM) -> None:
    key = keys["app"]
    api(server, key, "PUT", "/users/bob/instructions", json={"about_user": "Bob is a marine biologist."})
    by_header = client(server, key, default_headers={"X-Memstore-User": "bob"})
    by_header.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}])
    assert "marine biologist" in upstream.requests[-1].body["messages"][0]["content"]

    client(server, key).chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}])
    assert upstream.requests[-1].body["messages"] == [{"role": "user", "content": "hi"}]


def test_async_sdk_concurrent_users_stay_apart(server: ServerProcess, keys: dict[str, str],
                                               upstream: ScriptedLLM) -> None:
    key = keys["app"]
    users = [f"async-user-{i}" for i in range(6)]
    for u in users:
        api(server, key, "POST", f"/users/{u}/memories", json={"text": f"My favourite number is {u[-1]}42"})
    upstream.reply_fn = lambda req: req.system_text  # echo what was injected

    async def main() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        try:
            replies = await asyncio.gather(*[aclient.chat.completions.create(
                model="scripted-model", messages=[{"role": "user", "content": "what is my favourite number?"}],
                user=u) for u in users])
        finally:
            await aclient.close()
        return [r.choices[0].message.content or "" for r in replies]

    for u, text in zip(users, asyncio.run(main()), strict=True):
        assert f"is {u[-1]}42" in text
        assert sum(f"is {v[-1]}42" in text for v in users) == 1


def test_streaming_sync_and_async(server: ServerProcess, keys: dict[str, str], upstream: ScriptedLLM) -> None:
    key = keys["app"]
    api(server, key, "POST", "/users/carol/memories", json={"text": "I live in Lisbon"})
    upstream.enqueue("Sunny in Lisbon all week.", "Pack a light jacket.")
    stream = client(server, key).chat.completions.create(
        model="scripted-model", messages=[{"role": "user", "content": "weather where I live?"}], user="carol",
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Sunny in Lisbon all week."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert "I live in Lisbon" in upstream.requests[-1].body["messages"][0]["content"]

    async def main() -> str:
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        try:
            s = await aclient.chat.completions.create(
                model="scripted-model", messages=[{"role": "user", "content": "and tomorrow?"}], user="carol",
                stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
        finally:
            await aclient.close()

    assert asyncio.run(main()) == "Pack a light jacket."
    turns = wait_until(lambda: [t for t in api(server, key, "GET", "/users/carol/export").json()["turns"]
                                if t["response"]] or None)
    assert {t["response"] for t in turns} == {"Sunny in Lisbon all week.", "Pack a light jacket."}
    assert not any(t["metadata"].get("partial") for t in turns)


def test_client_leaving_mid_stream_records_a_partial_turn(server: ServerProcess, keys: dict[str, str],
                                                          upstream: ScriptedLLM) -> None:
    key = keys["app"]
    upstream.enqueue(ScriptedReply(content="one two three four five six seven eight nine ten", chunk_delay=0.2))
    body = {"model": "scripted-model", "stream": True, "user": "dave",
            "messages": [{"role": "user", "content": "count slowly"}]}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"one ' in line:
                break  # and hang up
    turn = wait_until(lambda: api(server, key, "GET", "/users/dave/export").json()["turns"])[0]
    assert turn["metadata"]["partial"] is True
    assert turn["response"].startswith("one")
    assert "ten" not in turn["response"]


def test_turns_are_extracted_in_the_background(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["app"]
    client(server, key).chat.completions.create(
        model="scripted-model", messages=[{"role": "user", "content": "I'm allergic to peanuts."}], user="erin")
    texts = wait_until(lambda: [m["text"] for m in api(server, key, "GET", "/users/erin/memories").json()["data"]])
    assert any("allergic to peanuts" in t.lower() for t in texts)


# ---- auth -------------------------------------------------------------------------------------------

def test_requests_without_a_valid_key_get_401(server: ServerProcess, keys: dict[str, str]) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    for bad in ("", "sk-not-ours", keys["app"][:-2] + "xx", keys["app"].replace("msk_", "msk_0")):
        with pytest.raises(openai.AuthenticationError) as err:
            client(server, bad or "x").chat.completions.create(model="scripted-model", messages=msgs)
        assert err.value.status_code == 401
        assert err.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    no_header = httpx.post(f"{server.base_url}/chat/completions", json={"model": "m", "messages": msgs})
    assert no_header.status_code == 401
    assert set(no_header.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{server.url}/v1/memory/users/alice/memories").status_code == 401
    assert httpx.get(f"{server.base_url}/models").status_code == 401


def test_revoked_key_is_refused_at_once(server: ServerProcess, keys: dict[str, str], home: Path) -> None:
    doomed = client(server, keys["doomed"])
    doomed.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}])
    store = open_keys(home=str(home))
    store.revoke("doomed")
    with pytest.raises(openai.AuthenticationError):
        doomed.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}])
    row = store.find(keys["doomed"])
    assert row.revoked_at is not None and row.last_used_at is not None


# ---- namespaces -------------------------------------------------------------------------------------

def test_namespace_bound_key_cannot_reach_another_namespace(server: ServerProcess, keys: dict[str, str],
                                                            upstream: ScriptedLLM) -> None:
    a, b = keys["team-a"], keys["team-b"]
    secret = api(server, b, "POST", "/users/frank/memories", json={"text": "My bank PIN hint is the dog's name"})
    secret_id = secret.json()["data"][0]["memory"]["id"]
    api(server, a, "POST", "/users/frank/memories", json={"text": "I work on team A"})

    # reading and writing team-b's memory by id with team-a's key: as if it did not exist
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"text": "hacked"}}), ("DELETE", {})):
        resp = api(server, a, method, f"/memories/{secret_id}", **kwargs)
        assert resp.status_code == 404, (method, resp.text)
        assert resp.json()["error"]["code"] == "not_found"
    assert api(server, a, "GET", f"/memories/{secret_id}/history").status_code == 404
    assert api(server, b, "GET", f"/memories/{secret_id}").json()["text"] == "My bank PIN hint is the dog's name"

    # naming the other namespace explicitly: 403, in headers, query or body
    other = {"X-Memstore-Namespace": "team-b"}
    assert api(server, a, "GET", "/users/frank/memories", headers=other).status_code == 403
    assert api(server, a, "GET", "/users/frank/memories?namespace=team-b").status_code == 403
    assert api(server, a, "DELETE", "/users/frank?all_namespaces=true").status_code == 403
    with pytest.raises(openai.PermissionDeniedError):
        client(server, a, default_headers=other).chat.completions.create(
            model="scripted-model", messages=[{"role": "user", "content": "hi"}], user="frank")
    with pytest.raises(openai.PermissionDeniedError):
        client(server, a).chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}],
                                                  user="frank", extra_body={"memory": {"namespace": "team-b"}})
    # its own namespace, named or not, works; lists and chat see only team A
    mine = api(server, a, "GET", "/users/frank/memories", headers={"X-Memstore-Namespace": "team-a"}).json()["data"]
    assert [m["text"] for m in mine] == ["I work on team A"]
    hits = api(server, a, "POST", "/users/frank/memories/search", json={"query": "bank PIN dog"}).json()["data"]
    assert all(h["memory"]["namespace"] == "team-a" for h in hits)
    assert "PIN" not in json.dumps(api(server, a, "GET", "/users/frank/export").json())
    client(server, a).chat.completions.create(
        model="scripted-model", messages=[{"role": "user", "content": "what is my bank PIN hint?"}], user="frank")
    injected = upstream.requests[-1].body["messages"][0]["content"]
    assert "team A" in injected and "PIN" not in injected


def test_unbound_key_picks_namespaces_by_header(server: ServerProcess, keys: dict[str, str],
                                               upstream: ScriptedLLM) -> None:
    key = keys["app"]
    ns = {"X-Memstore-Namespace": "project-x"}
    created = api(server, key, "POST", "/users/gina/memories", json={"text": "I use Rust at work"}, headers=ns)
    memory_id = created.json()["data"][0]["memory"]["id"]
    assert created.json()["data"][0]["memory"]["namespace"] == "project-x"
    assert api(server, key, "GET", f"/memories/{memory_id}").status_code == 404  # default namespace
    assert api(server, key, "GET", f"/memories/{memory_id}", headers=ns).status_code == 200
    assert api(server, key, "GET", f"/memories/{memory_id}", headers={**ns, "X-Memstore-User": "other"}
               ).status_code == 404
    client(server, key, default_headers=ns).chat.completions.create(
        model="scripted-model", messages=[{"role": "user", "content": "which language at work?"}], user="gina")
    assert "Rust" in upstream.requests[-1].body["messages"][0]["content"]
    client(server, key).chat.completions.create(
        model="scripted-model", messages=[{"role": "user", "content": "which language at work?"}], user="gina")
    assert "Rust" not in json.dumps(upstream.requests[-1].body["messages"])


# ---- the memory API ---------------------------------------------------------------------------------

def test_memory_api_crud_pagination_and_history(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["app"]
    for i in range(5):
        assert api(server, key, "POST", "/users/hank/memories",
                   json={"text": f"Hank fact number {i}", "kind": "fact", "importance": 0.3}).status_code == 201
    again = api(server, key, "POST", "/users/hank/memories", json={"text": "Hank fact number 0"})
    assert again.status_code == 200 and again.json()["data"][0]["event"] == "NOOP"

    first = api(server, key, "GET", "/users/hank/memories?limit=2").json()
    assert [m["text"] for m in first["data"]] == ["Hank fact number 0", "Hank fact number 1"]
    assert first["has_more"] is True and first["next_offset"] == 2
    last = api(server, key, "GET", "/users/hank/memories?limit=2&offset=4").json()
    assert [m["text"] for m in last["data"]] == ["Hank fact number 4"] and last["has_more"] is False

    hits = api(server, key, "GET", "/users/hank/memories/search?q=fact number 3&limit=1").json()
    assert len(hits["data"]) == 1 and hits["has_more"] is True
    assert hits["data"][0]["memory"]["text"] == "Hank fact number 3"

    mid = first["data"][1]["id"]
    patched = api(server, key, "PATCH", f"/memories/{mid}", json={"text": "Hank fact, corrected", "pinned": True})
    assert patched.status_code == 200 and patched.json()["pinned"] is True
    assert api(server, key, "GET", f"/memories/{mid}").json()["text"] == "Hank fact, corrected"
    events = api(server, key, "GET", f"/memories/{mid}/history").json()["data"]
    assert [e["event"] for e in events] == ["ADD", "UPDATE"] and events[1]["old_text"] == "Hank fact number 1"
    assert api(server, key, "DELETE", f"/memories/{mid}").json()["deleted"] is True
    assert api(server, key, "GET", f"/memories/{mid}").status_code == 404
    assert api(server, key, "GET", "/users/hank/memories").json()["data"].__len__() == 4

    bad = api(server, key, "GET", "/users/hank/memories?limit=0")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    assert api(server, key, "GET", "/users/hank/memories?kind=gossip").status_code == 400
    assert api(server, key, "PATCH", f"/memories/{first['data'][0]['id']}", json={"colour": "red"}).status_code == 400
    assert api(server, key, "POST", "/users/hank/memories", json={"text": "  "}).status_code == 400
    users = api(server, key, "GET", "/users").json()["data"]
    assert any(u["user_id"] == "hank" for u in users)


def test_instructions_and_rules_api(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["app"]
    put = api(server, key, "PUT", "/users/ivy/instructions",
              json={"about_user": "Ivy is a nurse.", "response_style": "Short answers."})
    assert put.json()["about_user"] == "Ivy is a nurse."
    api(server, key, "PATCH", "/users/ivy/instructions", json={"response_style": "Detailed answers."})
    got = api(server, key, "GET", "/users/ivy/instructions").json()
    assert got == {**got, "about_user": "Ivy is a nurse.", "response_style": "Detailed answers."}

    rule = api(server, key, "POST", "/users/ivy/rules", json={"text": "always answer in lowercase"}).json()
    assert rule["checker"] == "lowercase"
    replaced = api(server, key, "PUT", "/users/ivy/rules",
                   json={"rules": ["never use emoji", {"text": "always answer in lowercase"}]}).json()["data"]
    assert sorted(r["text"] for r in replaced) == ["always answer in lowercase", "never use emoji"]
    emoji = next(r for r in replaced if r["text"] == "never use emoji")
    disabled = api(server, key, "PATCH", f"/users/ivy/rules/{emoji['id']}", json={"enabled": False}).json()
    assert disabled["enabled"] is False
    assert api(server, key, "DELETE", f"/users/ivy/rules/{rule['id']}").json()["deleted"] is True
    assert [r["text"] for r in api(server, key, "GET", "/users/ivy/rules").json()["data"]] == ["never use emoji"]
    undone = api(server, key, "POST", "/users/ivy/rules/undo").json()
    assert "always answer in lowercase" in [r["text"] for r in undone["rules"]]
    assert api(server, key, "DELETE", "/users/ivy/rules/nope").status_code == 404
    ctx = api(server, key, "POST", "/users/ivy/context", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert "always answer in lowercase" in ctx["system_block"] and "Ivy is a nurse." in ctx["system_block"]


def test_compliance_export_and_forget(server: ServerProcess, keys: dict[str, str], upstream: ScriptedLLM) -> None:
    key = keys["app"]
    api(server, key, "POST", "/users/jack/rules", json={"text": "always answer in lowercase"})
    api(server, key, "POST", "/users/jack/memories", json={"text": "I have a cat named Miso"})
    upstream.enqueue("Hello Jack", "hello jack")
    c = client(server, key)
    for _ in range(2):
        c.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}], user="jack")
    rates = api(server, key, "GET", "/users/jack/compliance").json()["data"]
    assert rates[0]["checked"] == 2 and rates[0]["passed"] == 1

    def settled() -> Any:  # the worker has processed both turns (each exchange is also kept as an episode)
        data = api(server, key, "GET", "/users/jack/export").json()
        return data if all(t["status"] not in ("pending", "processing") for t in data["turns"]) else None

    export = wait_until(settled)
    assert export["format"] == "memstore.export" and export["namespace"] == "default"
    assert [m["text"] for m in export["memories"] if m["kind"] != "episode"] == ["I have a cat named Miso"]
    # "hi" / "Hello Jack" and "hi" / "hello jack" are one text once case is folded: one episode, both turns
    episodes = [m for m in export["memories"] if m["kind"] == "episode"]
    assert [m["text"] for m in episodes] == ["User: hi\nAssistant: Hello Jack"]
    assert len(episodes[0]["source_turn_ids"]) == 2
    assert len(export["rules"]) == 1 and len(export["turns"]) == 2
    # search: facts, or (episodes) facts and past conversations in one list
    facts = api(server, key, "POST", "/users/jack/memories/search", json={"query": "hello jack"}).json()["data"]
    assert {h["memory"]["kind"] for h in facts} == {"fact"}
    both = api(server, key, "GET", "/users/jack/memories/search?q=hello jack&episodes=true").json()["data"]
    assert {h["memory"]["kind"] for h in both} == {"fact", "episode"}

    gone = api(server, key, "DELETE", "/users/jack").json()
    assert gone["deleted"]["memories"] == 2
    after = api(server, key, "GET", "/users/jack/export").json()
    assert after["memories"] == [] and after["rules"] == [] and after["turns"] == []


# ---- limits and errors ------------------------------------------------------------------------------

def test_malformed_bodies_get_openai_shaped_400s(server: ServerProcess, keys: dict[str, str]) -> None:
    url = f"{server.base_url}/chat/completions"
    auth = {"Authorization": f"Bearer {keys['app']}", "Content-Type": "application/json"}
    cases = {
        b"{not json": "invalid_json",
        b"[1, 2]": "invalid_json",
        b"": "invalid_json",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(): "missing_required_parameter",
        json.dumps({"model": "scripted-model", "messages": []}).encode(): "invalid_value",
        json.dumps({"model": "scripted-model", "messages": ["hi"]}).encode(): "invalid_type",
        json.dumps({"model": "scripted-model", "messages": [{"role": "user", "content": "hi"}],
                    "api_base": "http://evil.example"}).encode(): "unknown_parameter",
        json.dumps({"model": "scripted-model", "messages": [{"role": "user", "content": "hi"}],
                    "memory": {"colour": "red"}}).encode(): "unknown_parameter",
    }
    for payload, code in cases.items():
        resp = httpx.post(url, content=payload, headers=auth)
        assert resp.status_code == 400, (payload, resp.text)
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, (payload, err)
        assert err["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client(server, keys["app"]).chat.completions.create(model="scripted-model", messages=[])
    missing = httpx.get(f"{server.base_url}/nothing-here", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"


def test_upstream_errors_keep_their_status(server: ServerProcess, keys: dict[str, str],
                                           upstream: ScriptedLLM) -> None:
    c = client(server, keys["app"])
    msgs = [{"role": "user", "content": "hi"}]
    upstream.enqueue(ScriptedReply(status=429, error="slow down"), ScriptedReply(status=400, error="bad tool schema"),
                     ScriptedReply(status=503, error="overloaded"), ScriptedReply(status=429, error="slow down"))
    with pytest.raises(openai.RateLimitError) as rate:
        c.chat.completions.create(model="scripted-model", messages=msgs, user="kim")
    assert "slow down" in rate.value.message and rate.value.response.headers.get("retry-after")
    with pytest.raises(openai.BadRequestError) as bad:
        c.chat.completions.create(model="scripted-model", messages=msgs, user="kim")
    assert "bad tool schema" in bad.value.message
    with pytest.raises(openai.InternalServerError) as down:
        c.chat.completions.create(model="scripted-model", messages=msgs, user="kim")
    assert down.value.status_code == 503
    with pytest.raises(openai.RateLimitError):  # streaming: refused before the first byte, so a real status
        list(c.chat.completions.create(model="scripted-model", messages=msgs, user="kim", stream=True))


def test_upstream_breaking_mid_stream_ends_with_an_error_event(server: ServerProcess, keys: dict[str, str],
                                                               upstream: ScriptedLLM) -> None:
    upstream.enqueue(ScriptedReply(content="a b c d e f g h", truncate_stream_after=3))
    body = {"model": "scripted-model", "stream": True, "user": "lena", "messages": [{"role": "user", "content": "go"}]}
    resp = httpx.post(f"{server.base_url}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {keys['app']}"}, timeout=30)
    events = [line.removeprefix("data: ") for line in resp.text.splitlines() if line.startswith("data: ")]
    assert resp.status_code == 200 and "[DONE]" not in events
    assert "error" in json.loads(events[-1])
    turn = wait_until(lambda: api(server, keys["app"], "GET", "/users/lena/export").json()["turns"])[0]
    assert turn["metadata"]["partial"] is True


def test_metrics_in_prometheus_format(server: ServerProcess, keys: dict[str, str]) -> None:
    client(server, keys["app"]).chat.completions.create(
        model="scripted-model", messages=[{"role": "user", "content": "hi"}], user="mona")
    httpx.get(f"{server.base_url}/models")  # a 401
    text = httpx.get(f"{server.url}/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    for name in ("memstore_requests_total", "memstore_injected_tokens_total", "memstore_fail_open_total",
                 "memstore_turns_recorded_total", "memstore_rule_checks_total", "memstore_rule_violations_total",
                 "memstore_server_auth_failures_total", "memstore_extraction_queue_depth"):
        assert name in values, name
    assert values["memstore_requests_total"] >= 1 and values["memstore_server_auth_failures_total"] >= 1
    assert values['memstore_http_responses_total{code="200"}'] >= 1
    assert values['memstore_http_responses_total{code="401"}'] >= 1
    assert "# TYPE memstore_extraction_queue_depth gauge" in text
