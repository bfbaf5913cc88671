"""The checks an imported row passes: the same as the write path that made it (memstore.validate), ids that stay
inside the importing scope (the plan remaps or refuses them), and size limits."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError, create_model
from sqlmodel import SQLModel

from memstore.config import MemoryConfig
from memstore.errors import ImportFormatError, InvalidInputError
from memstore.messages import valid_unicode
from memstore.portability.exports import SECTIONS
from memstore.records import (
    ComplianceRecord,
    Feedback,
    MemoryEvent,
    MemoryRecord,
    StyleRule,
    Turn,
    content_hash,
)
from memstore.validate import check_actor, check_kind, check_metadata, check_text

MAX_IMPORT_BYTES = 256 * 2**20   # an export file (or JSON string) larger than this is refused
MAX_IMPORT_ROWS = 1_000_000      # rows of all sections together (snapshot rules included)
MAX_FIELD_CHARS = 20_000         # reasons, comments, turn responses, error texts ...
_CHUNK = 500                     # ids per IN (...) lookup and rows per INSERT batch
_STATUSES = frozenset({"pending", "processing", "done", "failed", "skipped"})
_EVENTS = frozenset({"ADD", "UPDATE", "INVALIDATE", "DELETE", "RESTORE"})
_RULE_SOURCES = frozenset({"user", "extracted"})
_RULE_STATUSES = frozenset({"active", "proposed", "rejected"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
Scope = tuple[str, str]


@dataclass(frozen=True)
class ImportLimits:
    """What an import accepts; ``Memory.import_`` fills the text limits from its MemoryConfig."""

    max_bytes: int = MAX_IMPORT_BYTES
    max_rows: int = MAX_IMPORT_ROWS
    max_memory_chars: int = 2000
    max_instruction_chars: int = 1500
    redact_secrets: bool = True

    @classmethod
    def from_config(cls, config: MemoryConfig, **overrides: Any) -> ImportLimits:
        """The limits a store with ``config`` applies to every other write."""
        return cls(**{"max_memory_chars": config.max_memory_chars,
                      "max_instruction_chars": config.max_instruction_chars,
                      "redact_secrets": config.redact_secrets, **overrides})


@dataclass
class _Plan:
    """The checked rows of one import, then what to insert (``rows``) and what was skipped."""

    user_id: str
    limits: ImportLimits
    parsed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ids: dict[str, dict[str, Scope]] = field(default_factory=lambda: {k: {} for k in _ID_KINDS})
    remap: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in _ID_KINDS})
    present: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in _ID_KINDS})
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in SECTIONS})
    profile_bumps: list[dict[str, Any]] = field(default_factory=list)  # version bumps of existing profiles
    _redacted: dict[str, str] = field(default_factory=dict)  # a memory's text comes again in its history

    def redact(self, text: str | None) -> str | None:
        if text is None or not self.limits.redact_secrets:
            return text
        out = self._redacted.get(text)
        if out is None:
            out = self._redacted[text] = _redacted(text)
        return out

    def use(self, kind: str, value: object, scope: Scope, where: str, what: str) -> str:
        """Registers an id (defined or referred to) of ``kind`` in ``scope``: one id, one scope."""
        v = _check_id(value, what)
        seen = self.ids[kind].setdefault(v, scope)
        if seen != scope:
            raise ImportFormatError(f"{where}: {what} {v!r} is used in namespace {seen[1]!r} and {scope[1]!r}")
        return v

    def new(self, kind: str, value: str) -> str:
        return self.remap[kind].get(value, value)


_ID_KINDS = ("memory", "event", "rule", "turn", "feedback", "response")


def _owners() -> dict[str, list[tuple[Any, Any]]]:
    """(table, column) of every place an id of each kind is stored, the defining column first."""
    return {
        "memory": [(MemoryRecord, MemoryRecord.id), (MemoryEvent, MemoryEvent.memory_id)],
        "event": [(MemoryEvent, MemoryEvent.id)],
        "rule": [(StyleRule, StyleRule.id), (ComplianceRecord, ComplianceRecord.rule_id)],
        "turn": [(Turn, Turn.id)],
        "feedback": [(Feedback, Feedback.id)],
        "response": [(Turn, Turn.response_id), (Feedback, Feedback.response_id),
                     (Feedback, Feedback.other_response_id), (Feedback, Feedback.preferred),
                     (ComplianceRecord, ComplianceRecord.response_id)],
    }


@functools.cache
def _row_model(table: type[SQLModel]) -> type[BaseModel]:
    """A plain pydantic model with the table's fields and constraints: validating through the table model
    itself costs ten times more (every attribute set goes through SQLAlchemy's instrumentation)."""
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in table.model_fields.items()}
    return create_model(f"{table.__name__}Row", **fields)


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string")
    if len(value) > 256 or "\x00" in value or valid_unicode(value) != value:
        raise InvalidInputError(f"{what} must be at most 256 characters of valid text without NUL")
    return value


def _free_text(value: object, what: str, limit: int = MAX_FIELD_CHARS, redact_it: bool = False) -> str | None:
    """Optional free text: NULs dropped, lone surrogates replaced, bounded, secrets redacted when asked."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    text = valid_unicode(value).replace("\x00", "")
    if len(text) > limit:
        raise InvalidInputError(f"{what} is {len(text)} characters; the limit is {limit}")
    return _redacted(text) if redact_it else text


def _redacted(text: str) -> str:
    from memstore.redact import redact

    return redact(text)[0]


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number")
    return float(value)


def _clean_json(value: Any) -> Any:
    """JSON with NULs dropped and lone surrogates replaced in every string (keys included)."""
    if isinstance(value, str):
        return valid_unicode(value).replace("\x00", "")
    if isinstance(value, dict):
        return {_clean_json(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


def _aware(row: dict[str, Any]) -> dict[str, Any]:
    for k, v in row.items():
        if isinstance(v, datetime) and v.tzinfo is None:
            row[k] = v.replace(tzinfo=UTC)
    return row


def _instruction(value: object, what: str, limit: int) -> str:
    text = _free_text(value if value is not None else "", what, limit) or ""
    return text.strip()


def _check_rule(plan: _Plan, item: object, scope: Scope, where: str) -> dict[str, Any]:
    """A style rule as ``rules.add`` accepts it; user_id and namespace are forced to ``scope``."""
    from memstore.instructions import checkers
    from memstore.instructions.profiles import MAX_RULE_CHARS

    if not isinstance(item, dict):
        raise InvalidInputError("a rule must be an object")
    try:
        rule = _row_model(StyleRule).model_validate({**item, "user_id": scope[0], "namespace": scope[1]})
    except ValidationError as exc:
        raise InvalidInputError(_pydantic_msg(exc)) from exc
    row = _aware(rule.model_dump(exclude={"pk"}))
    row["id"] = plan.use("rule", row["id"], scope, where, "rule id")
    row["text"] = check_text(row["text"], MAX_RULE_CHARS, "rule text")
    if row["checker"] is not None:
        try:
            chk = checkers.validate_checker(row["checker"], row["params"])
        except ValueError as exc:
            raise InvalidInputError(f"checker: {exc}") from exc
        row["checker"], row["params"] = chk.kind, dict(chk.params)
    elif row["params"]:
        raise InvalidInputError("params need a checker")
    if row["source"] not in _RULE_SOURCES:
        raise InvalidInputError(f"source must be one of {sorted(_RULE_SOURCES)}")
    if row["status"] not in _RULE_STATUSES:
        raise InvalidInputError(f"status must be one of {sorted(_RULE_STATUSES)}")
    row["source_turn_ids"] = _turn_refs(plan, row["source_turn_ids"], scope, where)
    return row


def _turn_refs(plan: _Plan, value: object, scope: Scope, where: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 1000:
        raise InvalidInputError("source_turn_ids must be a list of at most 1000 ids")
    return [plan.use("turn", t, scope, where, "source turn id") for t in value]


def _check_snapshot(plan: _Plan, snap: object, scope: Scope, version: int, where: str) -> dict[str, Any]:
    """A profile snapshot as ``_snapshot`` writes it; anything else is refused. Its rules must belong to the
    version's own scope: they are checked like ``rules.add`` and their ids registered in that scope."""
    if not isinstance(snap, dict):
        raise InvalidInputError("snapshot must be an object")
    limit = plan.limits.max_instruction_chars
    out: dict[str, Any] = {
        "about_user": _instruction(snap.get("about_user"), "snapshot about_user", limit),
        "response_style": _instruction(snap.get("response_style"), "snapshot response_style", limit),
    }
    rules = snap.get("rules", [])
    if not isinstance(rules, list):
        raise InvalidInputError("snapshot rules must be a list")
    out["rules"] = []
    for j, r in enumerate(rules):
        try:
            out["rules"].append(_check_rule(plan, r, scope, where))
        except InvalidInputError as exc:
            raise InvalidInputError(f"snapshot rules[{j}]: {exc}") from exc
    if "restored_version" in snap:
        rv = snap["restored_version"]
        if isinstance(rv, bool) or not isinstance(rv, int) or not 0 <= rv < version:
            raise InvalidInputError(f"snapshot restored_version must be a version below {version}")
        out["restored_version"] = rv
    return out


def _check_row(plan: _Plan, name: str, item: dict[str, Any], scope: Scope, where: str) -> dict[str, Any]:
    lim = plan.limits
    if name == "rules":
        return _check_rule(plan, item, scope, where)
    table = SECTIONS[name]
    item = {k: v for k, v in item.items() if k not in ("pk", "indexed", "content_hash", "tsv")}
    try:
        row = _aware(_row_model(table).model_validate(item).model_dump(exclude={"pk", "indexed"}))
    except ValidationError as exc:
        raise InvalidInputError(_pydantic_msg(exc)) from exc
    if name == "memories":
        row["id"] = plan.use("memory", row["id"], scope, where, "id")
        row["text"] = plan.redact(check_text(row["text"], lim.max_memory_chars))
        row["content_hash"], row["indexed"] = content_hash(row["text"]), False
        check_kind(row["kind"])
        row["meta"] = _clean_json(check_metadata(row["meta"]))
        row["importance"] = _number(row["importance"], "importance")
        row["confidence"] = _number(row["confidence"], "confidence")
        row["source"] = _free_text(row["source"], "source", 64)
        row["source_turn_ids"] = _turn_refs(plan, row["source_turn_ids"], scope, where)
        if row["superseded_by"] is not None:
            row["superseded_by"] = plan.use("memory", row["superseded_by"], scope, where, "superseded_by")
    elif name == "events":
        row["id"] = plan.use("event", row["id"], scope, where, "id")
        row["memory_id"] = plan.use("memory", row["memory_id"], scope, where, "memory_id")
        if row["event"] not in _EVENTS:
            raise InvalidInputError(f"event must be one of {', '.join(sorted(_EVENTS))}")
        check_actor(row["actor"])
        for k in ("old_text", "new_text"):
            row[k] = plan.redact(_free_text(row[k], k, lim.max_memory_chars))
        row["reason"] = _free_text(row["reason"], "reason")
    elif name == "profiles":
        for k in ("about_user", "response_style"):
            row[k] = _instruction(row[k], k, lim.max_instruction_chars)
        if row["version"] < 0:
            raise InvalidInputError("version must not be negative")
    elif name == "profile_versions":
        if row["version"] < 0:
            raise InvalidInputError("version must not be negative")
        row["actor"] = _free_text(row["actor"], "actor", 64)  # profile changes take any actor name
        row["reason"] = _free_text(row["reason"], "reason")
        row["snapshot"] = _check_snapshot(plan, item.get("snapshot", {}), scope, row["version"], where)
    elif name == "turns":
        row["id"] = plan.use("turn", row["id"], scope, where, "id")
        msgs = row["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and m.get("role") in _ROLES for m in msgs):
            raise InvalidInputError(f"messages must be a list of messages with a role in {sorted(_ROLES)}")
        check_metadata({"messages": msgs})  # bounded size and depth
        msgs = _clean_json(msgs)
        row["response"] = _free_text(row["response"], "response", lim.max_bytes) or ""
        if lim.redact_secrets:
            from memstore.redact import redact_messages

            msgs = redact_messages(msgs)
            row["response"] = _redacted(row["response"])
        row["messages"] = msgs
        if row["response_id"] is not None:
            row["response_id"] = plan.use("response", row["response_id"], scope, where, "response_id")
        row["model"] = _free_text(row["model"], "model", 256)
        if row["status"] not in _STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(sorted(_STATUSES))}")
        if row["status"] == "processing":  # nobody here holds that claim: the worker takes the turn again
            row["status"] = "pending"
        row["claimed_by"] = row["claimed_at"] = None
        row["error"] = _free_text(row["error"], "error")
        row["meta"] = _clean_json(check_metadata(row["meta"]))
    elif name == "feedback":
        row["id"] = plan.use("feedback", row["id"], scope, where, "id")
        row["response_id"] = plan.use("response", row["response_id"], scope, where, "response_id")
        for k in ("other_response_id", "preferred"):
            if row[k] is not None:
                row[k] = plan.use("response", row[k], scope, where, k)
        if row["rating"] is not None and row["rating"] not in (1, -1):
            raise InvalidInputError("rating must be +1 or -1")
        row["comment"] = _free_text(row["comment"], "comment", redact_it=lim.redact_secrets)
    elif name == "compliance":
        from memstore.instructions.profiles import MAX_RULE_CHARS

        row["rule_id"] = plan.use("rule", row["rule_id"], scope, where, "rule_id")
        if row["response_id"] is not None:
            row["response_id"] = plan.use("response", row["response_id"], scope, where, "response_id")
        row["rule_text"] = check_text(row["rule_text"], MAX_RULE_CHARS, "rule text")
        row["checker"] = _free_text(row["checker"], "checker", 64)
        row["detail"] = _free_text(row["detail"], "detail") or ""
    return row


def _pydantic_msg(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{err['msg']} ({'.'.join(map(str, err['loc']))})"


