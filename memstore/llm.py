"""The one place that imports litellm: completions, streaming, structured output, retries, timeouts.

litellm is imported lazily (it takes seconds) with its model price map read from the local copy.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from memstore.errors import ExtractionError, LLMError

if TYPE_CHECKING:
    from memstore.config import MemoryConfig

log = logging.getLogger("memstore")
T = TypeVar("T", bound=BaseModel)
_litellm: Any = None


def litellm() -> Any:
    """The litellm module, imported on first use with offline-safe settings."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        import litellm as _lm

        _lm.suppress_debug_info = True
        _lm.telemetry = False
        _litellm = _lm
    return _litellm


@functools.lru_cache(maxsize=256)
def provider_of(model: str) -> str | None:
    """The provider litellm routes ``model`` to ("openai", "anthropic", "ollama" ...), None if it cannot tell."""
    try:
        return str(litellm().get_llm_provider(model)[1])
    except Exception:
        return None


_NO_KEY = re.compile(r"(?i)missing credentials|missing [\w ]*api[ _]?key|api[ _]key[\w ]* (?:must be set|is not set|"
                     r"not provided)|no api[ _]key")


def missing_key(exc: BaseException) -> bool:
    """Whether a model call failed for want of an API key (litellm reports OpenAI's as a 500)."""
    return bool(_NO_KEY.search(str(exc)))


def transient(exc: BaseException) -> bool:
    """Errors worth retrying: rate limits, timeouts, connection failures, 5xx (but not a missing API key,
    which litellm reports as a 500 for OpenAI models: no retry can fix it)."""
    if missing_key(exc):
        return False
    lm = litellm()
    kinds = tuple(getattr(lm, n) for n in ("RateLimitError", "Timeout", "APIConnectionError",
                                           "InternalServerError", "ServiceUnavailableError", "BadGatewayError")
                  if hasattr(lm, n))
    if isinstance(exc, kinds):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def _json_from(text: str) -> Any:
    """Parses a JSON object out of a reply, tolerating ```json fences and prose around it."""
    t = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", t, re.S)
    if fence:
        t = fence.group(1).strip()
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        start, end = t.find("{"), t.rfind("}")
        if start != -1 and end > start:
            return json.loads(t[start:end + 1])
        raise


class LLM:
    """A model reachable through litellm, with retries and structured output."""

    def __init__(self, model: str, api_base: str | None = None, api_key: str | Callable[[], Any] | None = None,
                 timeout: float = 60.0, max_retries: int = 2, backoff: float = 0.5) -> None:
        self.model = model
        self.api_base = api_base
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff

    @classmethod
    def from_config(cls, cfg: MemoryConfig) -> LLM:
        return cls(cfg.llm_model, cfg.llm_api_base, cfg.llm_api_key, cfg.llm_timeout, cfg.llm_max_retries)

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # retries are ours (with backoff and logging): the provider SDK must not retry underneath
        out = {"model": self.model, "timeout": self.timeout, "max_retries": 0, **kwargs}
        if self.api_base and "api_base" not in out and "base_url" not in out:
            out["api_base"] = self.api_base
        if self.api_key and "api_key" not in out:
            out["api_key"] = self._key()
        return out

    def _key(self) -> Any:
        """The API key; a callable one (an application's token provider) is asked at each call."""
        key: Any = self.api_key
        if callable(key):
            key = key()
            if inspect.isawaitable(key):  # AsyncMemoryClient's async token provider, from a worker thread
                key = asyncio.run(_awaited(key))
        return key

    def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        """litellm.completion with retries on transient errors; returns litellm's ModelResponse."""
        lm = litellm()
        attempt = 0
        while True:
            try:
                return lm.completion(messages=messages, **self._kwargs(kwargs))
            except Exception as exc:
                if attempt >= self.max_retries or not transient(exc):
                    raise LLMError(self._failure(exc)) from exc
                delay = self.backoff * (2 ** attempt) * (0.5 + random.random())
                log.info("transient model error (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                attempt += 1

    def _failure(self, exc: BaseException) -> str:
        """The error message of a failed call; for a missing API key, what to set (or how to do without)."""
        if not missing_key(exc):
            return f"model call failed ({self.model}): {exc}"
        try:
            wanted = list(litellm().validate_environment(model=self.model).get("missing_keys") or [])
        except Exception:
            wanted = []
        provider = f" or {' / '.join(wanted)}" if wanted else " or the provider's key variable"
        return (f"model call failed ({self.model}): no API key for it. Set MEMSTORE_LLM_API_KEY{provider} "
                f"(MemoryConfig(llm_api_key=...)), or MEMSTORE_EXTRACTOR=heuristic to extract without a model. "
                f"({' '.join(str(exc).split())[:300]})")

    def supports_schema(self) -> bool:
        try:
            return bool(litellm().supports_response_schema(model=self.model))
        except Exception:
            return False

    def structured(self, messages: list[dict[str, Any]], response_model: type[T], repairs: int = 1,
                   **kwargs: Any) -> T:
        """Asks for JSON matching ``response_model`` (JSON-schema mode where the provider supports it,
        else JSON mode) and validates it; an invalid reply gets ``repairs`` corrective retries."""
        if self.supports_schema():
            fmt: dict[str, Any] = {"type": "json_schema", "json_schema": {
                "name": response_model.__name__, "schema": response_model.model_json_schema()}}
        else:
            fmt = {"type": "json_object"}
        convo = list(messages)
        last_error = ""
        for attempt in range(repairs + 1):
            resp = self.complete(convo, response_format=fmt, temperature=0, **kwargs)
            text = resp.choices[0].message.content or ""
            try:
                return response_model.model_validate(_json_from(text))
            except (json.JSONDecodeError, ValidationError, ValueError) as exc:
                last_error = _short_error(exc)
                log.info("invalid structured reply (attempt %d): %s", attempt + 1, last_error)
                convo = [*messages, {"role": "assistant", "content": text[:8000]}, {
                    "role": "user",
                    "content": f"That reply was not valid: {last_error}\nReply again with only the corrected "
                               "JSON object, matching the required format exactly.",
                }]
        raise ExtractionError(f"the model did not return valid JSON after {repairs + 1} attempts: {last_error}")


async def _awaited(value: Any) -> Any:
    return await value


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errs = exc.errors()[:3]
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs)
    return str(exc)[:300]
