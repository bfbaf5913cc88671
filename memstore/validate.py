"""Checks every write path shares: scope, text, metadata and kind. Each raises InvalidInputError with a message
that names the field and the limit, before anything is written."""

from __future__ import annotations

import json
from typing import Any

from memstore.errors import InvalidInputError
from memstore.messages import valid_unicode
from memstore.records import KINDS

ACTORS = frozenset({"llm", "heuristic", "rules", "user", "api", "cli", "import"})


MAX_SCOPE_CHARS = 256


def check_scope(user_id: object, namespace: object) -> tuple[str, str]:
    """Validates a (user_id, namespace) pair; every read and write goes through here."""
    for name, value in (("user_id", user_id), ("namespace", namespace)):
        if not isinstance(value, str):
            raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise InvalidInputError(f"{name} must not be empty")
        if len(value) > MAX_SCOPE_CHARS:
            raise InvalidInputError(f"{name} is longer than {MAX_SCOPE_CHARS} characters")
        if "\x00" in value:
            raise InvalidInputError(f"{name} must not contain NUL characters")
        if valid_unicode(value) != value:
            raise InvalidInputError(f"{name} is not valid Unicode (it holds lone surrogates)")
    return user_id, namespace  # type: ignore[return-value]


def check_text(text: object, max_chars: int, what: str = "memory text") -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a string, got {type(text).__name__}")
    cleaned = valid_unicode(text).replace("\x00", "").strip()
    if not cleaned:
        raise InvalidInputError(f"{what} must not be empty")
    if len(cleaned) > max_chars:
        raise InvalidInputError(f"{what} is {len(cleaned)} characters; the limit is {max_chars}")
    return cleaned


MAX_METADATA_CHARS = 64_000
MAX_METADATA_DEPTH = 16


def check_metadata(meta: object) -> dict[str, Any]:
    """A JSON object of bounded size and depth (deep or huge metadata would crash or bloat every row)."""
    if not isinstance(meta, dict):
        raise InvalidInputError("metadata must be a dict")
    stack: list[tuple[object, int]] = [(meta, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise InvalidInputError(f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)
    try:
        size = len(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata must be JSON-serialisable: {exc}") from exc
    if size > MAX_METADATA_CHARS:
        raise InvalidInputError(f"metadata is {size} characters as JSON; the limit is {MAX_METADATA_CHARS}")
    return meta


def check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind  # type: ignore[return-value]


def check_actor(actor: object) -> str:
    if actor not in ACTORS:
        raise InvalidInputError(f"actor must be one of {sorted(ACTORS)}")
    return actor  # type: ignore[return-value]
