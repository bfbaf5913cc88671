"""The typed public surface: mypy over it, and the constructors' parity with the openai SDK's.

Also a command for the type check: ``python tests/adapters/openai/test_client_typing.py`` runs mypy with
pyproject's [tool.mypy] section over its ``files``, naming the repo's ``adapters/`` modules
``memstore.adapters.*`` as the wheel installs them (plain ``mypy`` would call them ``adapters.*`` and fail
to resolve their imports), and type-checks a sample of user code written against the openai SDK's types.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletion

from memstore import AsyncMemoryClient, MemoryClient
from memstore.testing import ScriptedLLM

ROOT = Path(__file__).resolve().parents[3]

# code a user of the openai SDK writes: it must type-check against MemoryClient as it does against openai.OpenAI
USER_CODE = '''
from collections.abc import Iterator
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from memstore import AsyncMemoryClient, MemoryClient, MemoryConfig

def sync_use() -> None:
    client = MemoryClient(api_key="k", base_url="http://localhost:1/v1", timeout=5.0, max_retries=0,
                          default_headers={"x": "1"}, memory=MemoryConfig(), user_id="alice")
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    sdk_type: ChatCompletion = reply  # the SDK's own type, plus what memstore did
    print(sdk_type.choices[0].message.content, reply.memstore.memory_ids if reply.memstore else [])
    with client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                        stream=True) as stream:
        chunks: Iterator[ChatCompletionChunk] = stream
        for chunk in chunks:
            print(chunk.choices[0].delta.content)
    resp: Response = client.responses.create(model="m", input="hi")
    for event in client.responses.create(model="m", input="hi", stream=True):
        e: ResponseStreamEvent = event
        print(e.type)
    print(resp.output_text, client.flush(timeout=1.0))
    client.close()

async def async_use() -> None:
    async with AsyncMemoryClient(api_key="k", user_id="alice") as client:
        reply: ChatCompletion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=False)
        stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        async for chunk in stream:
            c: ChatCompletionChunk = chunk
            print(c.id)
        events = await client.responses.create(model="m", input="hi", stream=True)
        async for event in events:
            e: ResponseStreamEvent = event
            print(e.type)
        done: bool = await client.flush()
        print(reply.id, done)
'''


def run_mypy(extra_sources: dict[str, str] | None = None) -> list[str]:
    """mypy over pyproject's [tool.mypy] files, adapters/ checked as memstore.adapters; returns the errors."""
    from mypy import build
    from mypy.main import process_options
    from mypy.modulefinder import BuildSource

    sources, options = process_options(["--config-file", str(ROOT / "pyproject.toml")])
    named = []
    for s in sources:
        module = s.module
        if s.path and Path(s.path).resolve().is_relative_to(ROOT / "adapters"):
            module = "memstore." + module  # adapters/openai/client.py is memstore.adapters.openai.client
        named.append(BuildSource(s.path, module, None, s.base_dir))
    for module, text in (extra_sources or {}).items():
        named.append(BuildSource(None, module, text))
    if not any(s.module == "memstore.adapters" for s in named):
        named.append(BuildSource(str(ROOT / "adapters" / "__init__.py"), "memstore.adapters"))
    return build.build(named, options).errors


@pytest.mark.slow
def test_the_public_surface_type_checks() -> None:
    errors = run_mypy({"memstore_user_code": USER_CODE})
    assert errors == []


def test_constructors_take_every_argument_of_the_openai_clients() -> None:
    for ours, theirs in ((MemoryClient, openai.OpenAI), (AsyncMemoryClient, openai.AsyncOpenAI)):
        params = inspect.signature(ours.__init__).parameters
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        missing = [n for n in inspect.signature(theirs.__init__).parameters if n != "self" and n not in params]
        assert missing == [], ours
        for own in ("memory", "user_id", "namespace", "strict", "enforce_rules", "start_worker"):
            assert own in params


def test_openai_arguments_reach_the_real_client(config, llm: ScriptedLLM) -> None:
    with MemoryClient(memory=config, base_url=llm.base_url, api_key="k", organization="org-7", project="proj-7",
                      default_query={"tenant": "t1"}, default_headers={"X-App": "demo"}, max_retries=0) as c:
        copy = c.with_options(timeout=5)
        assert isinstance(copy, openai.OpenAI) and copy.default_query == {"tenant": "t1"}
        c.models.list()
        req = llm.requests[-1]
        assert req.headers.get("openai-organization") == "org-7" and req.headers.get("openai-project") == "proj-7"
        assert req.headers.get("x-app") == "demo"
        c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
        assert llm.requests[-1].headers.get("x-app") == "demo"  # default_headers reach the model call too


def test_a_callable_api_key_is_asked_per_request(config, llm: ScriptedLLM) -> None:
    keys = iter(["key-1", "key-2"])
    with MemoryClient(memory=config, base_url=llm.base_url, api_key=lambda: next(keys)) as c:
        for _ in range(2):
            reply = c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
            assert isinstance(reply, ChatCompletion)
    assert [r.headers.get("authorization") for r in llm.requests[-2:]] == ["Bearer key-1", "Bearer key-2"]

    async def key() -> str:
        return "async-key"

    async def main() -> None:
        async with AsyncMemoryClient(memory=config, base_url=llm.base_url, api_key=key) as c:
            await c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
            await c.responses.create(model="scripted", input="hi")

    asyncio.run(main())
    assert [r.headers.get("authorization") for r in llm.requests[-2:]] == ["Bearer async-key"] * 2


if __name__ == "__main__":
    found = run_mypy({"memstore_user_code": USER_CODE})
    print("\n".join(found) or "mypy: no issues in the public surface")
    sys.exit(1 if found else 0)
