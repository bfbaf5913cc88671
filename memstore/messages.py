"""Normalising chat messages: a string or OpenAI-style dicts (content as text or content parts)."""

from __future__ import annotations

import re
from typing import Any

from memstore.errors import InvalidInputError

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MAX_PART_DEPTH = 4
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """``text`` with lone surrogates (what decoding non-UTF-8 bytes with ``surrogateescape`` leaves) replaced
    by U+FFFD: they cannot be encoded, stored or embedded."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def content_text(content: Any, _depth: int = 0) -> str:
    """The text of a message's content: a string, or the text parts of a content-part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return valid_unicode(content)
    if _depth > MAX_PART_DEPTH:
        raise InvalidInputError("message content is nested too deeply")
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if part.get("type") in (None, "text", "input_text", "output_text") and "text" in part:
                    t = part["text"]
                    out.append(t if isinstance(t, str) else content_text(t, _depth + 1))
                elif "content" in part:
                    out.append(content_text(part["content"], _depth + 1))
            else:
                raise InvalidInputError(f"unsupported content part of type {type(part).__name__}")
        return "\n".join(x for x in out if x)
    raise InvalidInputError(f"message content must be a string or a list of parts, not {type(content).__name__}")


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validated copies of ``messages`` as [{"role", "content": str}]; a bare string is one user message."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    elif isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list | tuple):
        raise InvalidInputError(f"messages must be a string or a list of dicts, not {type(messages).__name__}")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if hasattr(m, "model_dump"):
            m = m.model_dump(exclude_none=True)
        if not isinstance(m, dict):
            raise InvalidInputError(f"message {i} must be a dict with 'role' and 'content'")
        role = m.get("role")
        if role not in ROLES:
            raise InvalidInputError(f"message {i} has an unknown role {role!r}")
        text = content_text(m.get("content")).replace("\x00", "")
        out.append({"role": role, "content": text})
    if not out:
        raise InvalidInputError("messages must not be empty")
    return out


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return ""
