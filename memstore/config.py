"""MemoryConfig: explicit kwargs > MEMSTORE_* environment variables > defaults.

Environment variables are read when a config is built (at call time), never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memstore.errors import ConfigError

ENV_PREFIX = "MEMSTORE_"


def default_home() -> Path:
    """``$MEMSTORE_HOME`` or ``~/.memstore``."""
    env = os.environ.get("MEMSTORE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".memstore"


class MemoryConfig(BaseModel):
    """Every setting of a memstore installation. Unset fields come from ``MEMSTORE_<NAME>`` env vars."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    home: Path | None = Field(None, description="Directory for the embedded database and index.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite in home.")
    vector_url: str | None = Field(None, description="Chroma server URL; default embedded chroma in home.")
    vector_backend: Literal["chroma"] = "chroma"
    collection: str = Field("memstore_memories", description="Chroma collection name.")
    embedding_model: str | None = Field(None, description="sentence-transformers path or name.")
    vector_cache_mb: int = Field(256, ge=0, description="Memory for exact in-process search over each scope's "
                                 "vectors (LRU); 0 sends every dense query to the vector index.")

    extractor: Literal["llm", "heuristic"] = Field(
        "llm", description="llm (a model extracts) or heuristic (patterns, no model calls; formerly 'rules').")
    llm_model: str = "gpt-4.1-mini"
    llm_api_base: str | None = None
    llm_api_key: str | None = None
    llm_timeout: float = 60.0
    llm_max_retries: int = 2
    extraction_batch_size: int = 8
    extraction_max_attempts: int = 3

    token_budget: int = 800
    injection: Literal["split", "system"] = Field(
        "split", description="Where the block goes: split (rules, profile and pinned memories in the leading "
        "system message, the memories recalled for this request in a system message just before the last user "
        "message, so the history stays a cacheable prefix) or system (the whole block in the leading system "
        "message).")
    search_limit: int = 8
    episodes: bool = Field(True, description="Keep every recorded exchange as a searchable episode and inject "
                           "the relevant excerpts of past conversations after the facts (per request: "
                           "memory.episodes).")
    episode_limit: int = Field(3, ge=0, description="At most this many past-conversation excerpts per request "
                               "(within token_budget, after the facts).")
    recency_weight: float = 0.1
    dense_weight: float = 1.0
    lexical_weight: float = 0.5

    auto_accept_rules: bool = True
    max_instruction_chars: int = 1500
    max_memory_chars: int = 2000
    redact_secrets: bool = True
    strict: bool = False
    request_db_wait: float = Field(1.0, ge=0, le=30, description="Seconds a request waits for a locked database "
                                   "(its context read and its turn write); a turn it cannot write then waits in "
                                   "a spool file under home and reaches the outbox later.")
    close_timeout: float = Field(10.0, ge=0, description="Seconds close() and interpreter exit wait for this "
                                 "process's unfinished turns to be extracted (0: do not wait).")

    @field_validator("extractor", mode="before")
    @classmethod
    def _extractor_alias(cls, v: Any) -> Any:
        return "heuristic" if v == "rules" else v  # the name before 0.2, still accepted

    @field_validator("token_budget", "search_limit", "max_instruction_chars", "max_memory_chars",
                     "extraction_batch_size", "extraction_max_attempts")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be a positive integer")
        return v

    def __init__(self, **data: Any) -> None:
        explicit = set(data)
        from_env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            if name in explicit:
                continue
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            from_env[name] = raw
            ann = field.annotation
            if ann is bool:
                data[name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            else:
                data[name] = raw
        try:
            super().__init__(**data)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise ConfigError(_config_error(exc, data, from_env)) from exc

    # ---- derived values -------------------------------------------------------------------------
    def resolved_home(self) -> Path:
        return (self.home.expanduser() if self.home else default_home()).resolve()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home() / 'memstore.db'}"

    def resolved_vector_path(self) -> Path:
        return self.resolved_home() / "chroma"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url().startswith("sqlite")


def _config_error(exc: ValueError, data: dict[str, Any], from_env: dict[str, str]) -> str:
    """One line per bad setting, naming where it came from: ``MEMSTORE_TOKEN_BUDGET='lots': must be an
    integer`` (an environment variable) or ``token_budget='lots': ...`` (an argument)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"invalid memstore configuration: {exc}"
    parts = []
    for err in errors():
        loc = err.get("loc") or ()
        name = str(loc[0]) if loc else "?"
        if name in from_env:
            where = f"{ENV_PREFIX}{name.upper()}={from_env[name]!r}"
        else:
            where = f"{name}={data.get(name)!r}" if name in data else name
        parts.append(f"{where}: {_explain(err)}")
    return "invalid memstore configuration: " + "; ".join(parts)


_ERROR_TEXT = {"int_parsing": "must be an integer", "int_from_float": "must be an integer",
               "float_parsing": "must be a number", "bool_parsing": "must be true or false",
               "extra_forbidden": "is not a memstore setting", "missing": "is required"}


def _explain(err: dict[str, Any]) -> str:
    kind = str(err.get("type", ""))
    if kind in _ERROR_TEXT:
        return _ERROR_TEXT[kind]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return msg.replace("Input should be", "must be")
