"""Real clients against `memstore serve`: the official openai SDK (chat and responses), LangChain's
ChatOpenAI, simonw's `llm` (an OpenAI-compatible model entry, Python API and CLI) and the OpenAI Agents SDK
(both model classes), each configured exactly as docs/clients.md says.

Each test stores a memory for its own user through the memory API, runs the client against a real
`memstore serve` process whose upstream is the scripted model, and checks three things:

- the memory block reached the upstream (the stored memory's text is in a system/developer message or
  in the Responses ``instructions`` of what the scripted server received);
- the turn was recorded (the user's export lists it, with the client's question and the model's reply);
- the worker extracted a new memory from it (the heuristic extractor turns "I love hiking in the Alps"
  into a memory whose ``source_turn_ids`` name that turn).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from memstore.adapters.server.keys import open_keys

from memstore.testing import ScriptedLLM, ScriptedReply, ScriptedRequest
from memstore.testing.server_process import ServerProcess

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.usefixtures("fresh_upstream")]

MODEL = "scripted-model"
FACT = "I love hiking in the Alps."   # what every test says about itself: the heuristic extractor keeps it
EXTRACTED = "hiking in the alps"      # ... as "Loves hiking in the Alps"


# ---- the server -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def key(home: Path) -> str:
    """A proxy key, made in the server's database before it starts (what `memstore keys create` does)."""
    _row, secret = open_keys(home=str(home)).create("real-clients", None)
    return secret


@pytest.fixture(scope="module")
def server(home: Path, key: str, upstream: ScriptedLLM) -> Iterator[ServerProcess]:
    with pytest.MonkeyPatch.context() as mp:  # the child must not inherit a developer's MEMSTORE_* settings
        for name in [n for n in os.environ if n.startswith("MEMSTORE_")]:
            mp.delenv(name)
        srv = ServerProcess(home, ["--upstream-base-url", upstream.base_url, "--upstream-api-key", "upstream-secret",
                                   "--upstream-max-retries", "0", "--extractor", "heuristic", "--rate-limit", "0"])
    with srv:
        yield srv


def api(server: ServerProcess, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The memory REST API of the server."""
    return httpx.request(method, f"{server.url}/v1/memory{path}", headers={"Authorization": f"Bearer {key}"},
                         timeout=60, **kwargs)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout}s")
        time.sleep(0.2)


# ---- one user per test: a stored memory in, a recorded turn and an extracted memory out --------------

@dataclass
class Person:
    """A user of one test, with a memory of theirs that must reach the upstream."""

    server: ServerProcess
    key: str
    user: str
    pet: str

    @property
    def memory(self) -> str:
        return f"My dog is called {self.pet}"

    @property
    def question(self) -> str:
        """One message that recalls the stored memory and discloses something new."""
        return f"{FACT} What is my dog called?"

    def assert_block_reached(self, request: ScriptedRequest) -> None:
        """The stored memory is in what the upstream got as system text (system or developer messages,
        or the Responses ``instructions``), not merely somewhere in the conversation."""
        assert self.memory in request.system_text, (
            f"the memory block did not reach the upstream for {self.user}: {json.dumps(request.body)[:2000]}")

    def recorded_turn(self, reply: str) -> dict[str, Any]:
        """The outbox turn whose reply is ``reply``, once the server has recorded it."""
        def find() -> dict[str, Any] | None:
            turns = api(self.server, self.key, "GET", f"/users/{self.user}/export").json()["turns"]
            return next((t for t in turns if t["response"] == reply), None)

        turn: dict[str, Any] = wait_until(find, f"a recorded turn of {self.user} answered {reply!r}")
        said = json.dumps(turn["messages"])
        assert "What is my dog called?" in said, turn["messages"]
        assert self.memory not in said, "the injected block was recorded as if the user had said it"
        assert not turn["metadata"].get("partial"), turn
        return turn

    def extracted_from(self, turn: dict[str, Any]) -> dict[str, Any]:
        """The memory the worker extracted from this user's turns, once ``turn`` has been processed.
        (When several turns repeat the same user message, the memory names the first; the later ones
        are done or skipped, having nothing new.)"""
        def find() -> dict[str, Any] | None:
            export = api(self.server, self.key, "GET", f"/users/{self.user}/export").json()
            status = next(t["status"] for t in export["turns"] if t["id"] == turn["id"])
            if status in ("pending", "processing"):
                return None
            assert status in ("done", "skipped"), f"turn {turn['id']} ended {status!r}"
            mine = {t["id"] for t in export["turns"]}
            return next((m for m in export["memories"]
                         if EXTRACTED in m["text"].lower() and set(m["source_turn_ids"]) & mine), None)

        memory: dict[str, Any] = wait_until(find, f"a memory extracted from the turns of {self.user}")
        return memory

    def check_recorded(self, reply: str) -> None:
        self.extracted_from(self.recorded_turn(reply))


@pytest.fixture
def person(server: ServerProcess, key: str, request: pytest.FixtureRequest) -> Person:
    tag = uuid.uuid4().hex[:8]
    p = Person(server, key, user=f"{request.node.name.split('[')[0].removeprefix('test_')[:40]}-{tag}",
               pet=f"Biscuit{tag}")
    added = api(server, key, "POST", f"/users/{p.user}/memories", json={"text": p.memory})
    assert added.status_code == 201, added.text
    return p


def calls(upstream: ScriptedLLM, path: str) -> list[ScriptedRequest]:
    return [r for r in upstream.requests if r.path == path]


# ---- the official openai SDK ------------------------------------------------------------------------

def test_openai_sdk_chat(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    upstream.enqueue("Your dog is Biscuit.")
    client = openai.OpenAI(base_url=server.base_url, api_key=person.key, max_retries=0)
    resp = client.chat.completions.create(model=MODEL, user=person.user,
                                          messages=[{"role": "user", "content": person.question}])
    assert resp.choices[0].message.content == "Your dog is Biscuit."
    [sent] = calls(upstream, "/v1/chat/completions")
    person.assert_block_reached(sent)
    assert sent.headers["authorization"] == "Bearer upstream-secret"
    person.check_recorded("Your dog is Biscuit.")


def test_openai_sdk_chat_stream(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    upstream.enqueue("Your dog is called Biscuit, and the Alps are lovely.")
    client = openai.OpenAI(base_url=server.base_url, api_key=person.key, max_retries=0)
    stream = client.chat.completions.create(model=MODEL, user=person.user, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": person.question}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Your dog is called Biscuit, and the Alps are lovely."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    [sent] = calls(upstream, "/v1/chat/completions")
    assert sent.stream
    person.assert_block_reached(sent)
    person.check_recorded(text)


def test_openai_sdk_responses(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    upstream.enqueue("Biscuit, of course.")
    client = openai.OpenAI(base_url=server.base_url, api_key=person.key, max_retries=0)
    resp = client.responses.create(model=MODEL, user=person.user, instructions="Answer briefly.",
                                   input=person.question)
    assert resp.output_text == "Biscuit, of course."
    [sent] = calls(upstream, "/v1/responses")
    person.assert_block_reached(sent)
    assert "Answer briefly." in sent.body["instructions"]  # the caller's instructions are kept
    person.check_recorded("Biscuit, of course.")


def test_openai_sdk_responses_stream(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    upstream.enqueue("Biscuit is your dog's name.")
    client = openai.OpenAI(base_url=server.base_url, api_key=person.key, max_retries=0,
                           default_headers={"X-Memstore-User": person.user})
    events = list(client.responses.create(model=MODEL, stream=True,
                                          input=[{"role": "user", "content": person.question}]))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Biscuit is your dog's name."
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == text
    [sent] = calls(upstream, "/v1/responses")
    assert sent.stream
    person.assert_block_reached(sent)
    person.check_recorded(text)


# ---- LangChain ChatOpenAI ---------------------------------------------------------------------------

def langchain_chat(server: ServerProcess, person: Person, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=server.base_url, api_key=person.key,  # type: ignore[arg-type]
                      default_headers={"X-Memstore-User": person.user}, max_retries=0, **kwargs)


def test_langchain_invoke(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    upstream.enqueue("Biscuit!")
    answer = langchain_chat(server, person).invoke(person.question)
    assert answer.content == "Biscuit!"
    [sent] = calls(upstream, "/v1/chat/completions")
    person.assert_block_reached(sent)
    person.check_recorded("Biscuit!")


def test_langchain_stream(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    upstream.enqueue("Your dog's name is Biscuit.")
    chunks = list(langchain_chat(server, person, stream_usage=True).stream(
        [SystemMessage("You are a concise assistant."), HumanMessage(person.question)]))
    text = "".join(str(c.content) for c in chunks)
    assert text == "Your dog's name is Biscuit."
    assert any(c.usage_metadata and c.usage_metadata["total_tokens"] > 0 for c in chunks)  # usage came through
    [sent] = calls(upstream, "/v1/chat/completions")
    assert sent.stream
    person.assert_block_reached(sent)
    assert "You are a concise assistant." in sent.system_text  # the caller's system message is kept
    person.check_recorded(text)


def test_langchain_tool_calling_round_trip(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    @tool
    def dog_walk_forecast(city: str) -> str:
        """Tomorrow's weather for a dog walk in a city."""
        return f"Dry and 18C in {city} tomorrow."

    upstream.enqueue(ScriptedReply(tool_calls=[{"name": "dog_walk_forecast", "arguments": {"city": "Lisbon"}}]),
                     "Take Biscuit out: dry and 18C in Lisbon.")
    chat = langchain_chat(server, person).bind_tools([dog_walk_forecast])
    messages: list[Any] = [HumanMessage(person.question + " Also, can I walk him in Lisbon tomorrow?")]
    ai = chat.invoke(messages)
    assert [c["name"] for c in ai.tool_calls] == ["dog_walk_forecast"]
    assert ai.tool_calls[0]["args"] == {"city": "Lisbon"}
    messages += [ai, dog_walk_forecast.invoke(ai.tool_calls[0])]
    final = chat.invoke(messages)
    assert final.content == "Take Biscuit out: dry and 18C in Lisbon."

    first, second = calls(upstream, "/v1/chat/completions")
    assert [t["function"]["name"] for t in first.body["tools"]] == ["dog_walk_forecast"]
    tool_messages = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert tool_messages and "Dry and 18C in Lisbon" in json.dumps(tool_messages)
    assert tool_messages[0]["tool_call_id"] == ai.tool_calls[0]["id"]
    person.assert_block_reached(first)
    person.assert_block_reached(second)
    turn = person.recorded_turn("Take Biscuit out: dry and 18C in Lisbon.")
    assert "Dry and 18C in Lisbon" in json.dumps(turn["messages"])  # the tool result is part of the exchange
    person.extracted_from(turn)


def test_langchain_on_the_responses_api(server: ServerProcess, person: Person, upstream: ScriptedLLM) -> None:
    upstream.enqueue("Biscuit, via Responses.")
    answer = langchain_chat(server, person, use_responses_api=True).invoke(person.question)
    assert answer.text == "Biscuit, via Responses."
    [sent] = calls(upstream, "/v1/responses")
    person.assert_block_reached(sent)
    person.check_recorded("Biscuit, via Responses.")


# ---- simonw's llm -----------------------------------------------------------------------------------

LLM_MODEL_ID = "memstore"


@pytest.fixture
def llm_home(tmp_path: Path, server: ServerProcess, person: Person, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An LLM_USER_PATH whose extra-openai-models.yaml points a model at `memstore serve` (docs/clients.md)."""
    path = tmp_path / "llm"
    path.mkdir()
    (path / "extra-openai-models.yaml").write_text(
        f"- model_id: {LLM_MODEL_ID}\n"
        f"  model_name: {MODEL}\n"
        f"  api_base: {server.base_url}\n"
        f"  api_key_name: memstore\n"
        f"  headers:\n"
        f"    X-Memstore-User: {person.user}\n")
    monkeypatch.setenv("LLM_USER_PATH", str(path))
    return path


def run_llm(llm_home: Path, *args: str) -> str:
    """The `llm` command in a subprocess, with LLM_USER_PATH set to ``llm_home``."""
    exe = Path(sys.executable).with_name("llm")
    env = {**os.environ, "LLM_USER_PATH": str(llm_home), "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"llm {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def test_llm_python_api(llm_home: Path, person: Person, upstream: ScriptedLLM) -> None:
    import llm

    upstream.enqueue("Biscuit.", "Biscuit, and enjoy the Alps.")
    model = llm.get_model(LLM_MODEL_ID)
    assert model.prompt(person.question, key=person.key, stream=False).text() == "Biscuit."
    streamed = "".join(model.prompt(person.question, key=person.key))
    assert streamed == "Biscuit, and enjoy the Alps."

    plain, stream = calls(upstream, "/v1/chat/completions")
    assert not plain.stream and stream.stream
    person.assert_block_reached(plain)
    person.assert_block_reached(stream)
    person.check_recorded("Biscuit.")
    person.check_recorded("Biscuit, and enjoy the Alps.")


def test_llm_cli(llm_home: Path, person: Person, upstream: ScriptedLLM) -> None:
    upstream.enqueue("Your dog is Biscuit.")
    run_llm(llm_home, "keys", "set", "memstore", "--value", person.key)
    out = run_llm(llm_home, "-m", LLM_MODEL_ID, "-s", "Answer in one sentence.", person.question)
    assert out.strip() == "Your dog is Biscuit."
    [sent] = calls(upstream, "/v1/chat/completions")
    person.assert_block_reached(sent)
    assert "Answer in one sentence." in sent.system_text
    person.check_recorded("Your dog is Biscuit.")


# ---- the OpenAI Agents SDK --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def _no_tracing() -> Iterator[None]:
    """The Agents SDK would upload traces to OpenAI; nothing leaves this machine."""
    import agents

    agents.set_tracing_disabled(True)
    yield
    agents.set_tracing_disabled(False)


def agent_model(kind: str, server: ServerProcess, person: Person) -> Any:
    from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel

    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=person.key, max_retries=0,
                                default_headers={"X-Memstore-User": person.user})
    if kind == "chat":
        return OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
    return OpenAIResponsesModel(model=MODEL, openai_client=client)


async def run_agent(agent: Any, prompt: str, streamed: bool) -> tuple[str, str]:
    """(final output, the text deltas seen while streaming, or "" when not streamed)."""
    from agents import Runner

    if not streamed:
        result = await Runner.run(agent, prompt)
        return str(result.final_output), ""
    run = Runner.run_streamed(agent, prompt)
    deltas = []
    async for event in run.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    return str(run.final_output), "".join(deltas)


@pytest.mark.usefixtures("_no_tracing")
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_agents_sdk(kind: str, streamed: bool, server: ServerProcess, person: Person,
                    upstream: ScriptedLLM) -> None:
    from agents import Agent

    reply = f"Your dog is called {person.pet}."
    upstream.enqueue(reply)
    agent = Agent(name="Assistant", instructions="You are a helpful assistant.",
                  model=agent_model(kind, server, person))
    final, deltas = asyncio.run(run_agent(agent, person.question, streamed))
    assert final == reply
    if streamed:
        assert deltas == reply

    path = "/v1/chat/completions" if kind == "chat" else "/v1/responses"
    [sent] = calls(upstream, path)
    assert sent.stream is streamed
    person.assert_block_reached(sent)
    assert "You are a helpful assistant." in sent.system_text  # the agent's own instructions are kept
    person.check_recorded(reply)


@pytest.mark.usefixtures("_no_tracing")
@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_agents_sdk_tool_round_trip(kind: str, server: ServerProcess, person: Person,
                                    upstream: ScriptedLLM) -> None:
    from agents import Agent, function_tool

    @function_tool
    def dog_walk_forecast(city: str) -> str:
        """Tomorrow's weather for a dog walk in a city."""
        return f"Dry and 18C in {city} tomorrow."

    reply = f"Take {person.pet} out: dry and 18C in Lisbon."
    upstream.enqueue(ScriptedReply(tool_calls=[{"name": "dog_walk_forecast", "arguments": {"city": "Lisbon"}}]),
                     reply)
    agent = Agent(name="Assistant", instructions="You are a helpful assistant.", tools=[dog_walk_forecast],
                  model=agent_model(kind, server, person))
    final, _ = asyncio.run(run_agent(agent, person.question + " Can I walk him in Lisbon tomorrow?", False))
    assert final == reply

    path = "/v1/chat/completions" if kind == "chat" else "/v1/responses"
    first, second = calls(upstream, path)
    assert "dog_walk_forecast" in json.dumps(first.body["tools"])
    assert "Dry and 18C in Lisbon" in json.dumps(second.body)  # the tool's result went back to the model
    person.assert_block_reached(first)
    person.assert_block_reached(second)
    turn = person.recorded_turn(reply)
    assert "Dry and 18C in Lisbon" in json.dumps(turn["messages"])
    person.extracted_from(turn)
