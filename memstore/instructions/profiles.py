"""Custom instructions (about_user, response_style) and style rules, versioned with undo.

Every change of a profile or its rules writes a new ProfileVersion holding a full snapshot, so ``undo``
can restore the state before the last change (and, called again, the one before that).
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, Integer, bindparam, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from memstore.errors import InvalidInputError, NotFoundError, StorageError
from memstore.records import (
    ComplianceRecord,
    ProfileRecord,
    ProfileVersion,
    StyleRule,
    new_id,
    normalize_text,
    utcnow,
)
from memstore.storage.db import session_scope
from memstore.validate import check_scope, check_text

MAX_RULE_CHARS = 500
_T = TypeVar("_T")


def _serialized(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Profile changes of one user are numbered (a unique version per change): when two writers, threads or
    processes, change the same profile at once, the loser's transaction is rolled back and run again on the
    new state, instead of failing with an IntegrityError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        for attempt in range(10):
            try:
                return fn(*args, **kwargs)
            except IntegrityError as exc:
                if attempt == 9:
                    raise StorageError(f"profile changed concurrently too often; retry: {exc}") from exc
                time.sleep(random.uniform(0.002, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper


class Profile(BaseModel):
    """A user's custom instructions and style rules in one namespace."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    user_id: str
    namespace: str
    about_user: str = ""
    response_style: str = ""
    rules: list[StyleRule] = []       # active and enabled: what gets injected
    proposals: list[StyleRule] = []   # extracted rules waiting for acceptance
    version: int = 0
    updated_at: datetime | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.about_user or self.response_style or self.rules)


def _row(s: Session, user_id: str, namespace: str, create: bool = False) -> ProfileRecord | None:
    row = s.exec(select(ProfileRecord).where(ProfileRecord.user_id == user_id,
                                             ProfileRecord.namespace == namespace)).first()
    if row is None and create:
        row = ProfileRecord(user_id=user_id, namespace=namespace)
        s.add(row)
        s.flush()
    return row


def _rules(s: Session, user_id: str, namespace: str) -> list[StyleRule]:
    return list(s.exec(select(StyleRule).where(StyleRule.user_id == user_id, StyleRule.namespace == namespace)
                       .order_by(col(StyleRule.created_at), col(StyleRule.pk))).all())


def _snapshot(s: Session, row: ProfileRecord, actor: str, reason: str, extra: dict[str, Any] | None = None) -> None:
    """Bumps the version and records the full state after a change (same transaction)."""
    if row.version == 0 and not s.exec(select(ProfileVersion).where(
            ProfileVersion.user_id == row.user_id, ProfileVersion.namespace == row.namespace)).first():
        s.add(ProfileVersion(user_id=row.user_id, namespace=row.namespace, version=0, actor=actor,
                             reason="initial", snapshot={"about_user": "", "response_style": "", "rules": []}))
    row.version += 1
    row.updated_at = utcnow()
    s.add(row)
    snap = {
        "about_user": row.about_user,
        "response_style": row.response_style,
        "rules": [r.model_dump(mode="json", exclude={"pk"}) for r in _rules(s, row.user_id, row.namespace)],
        **(extra or {}),
    }
    s.add(ProfileVersion(user_id=row.user_id, namespace=row.namespace, version=row.version, snapshot=snap,
                         actor=actor, reason=reason))


def _check_instruction(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    value = value.replace("\x00", "").strip()
    if len(value) > limit:
        raise InvalidInputError(f"{name} is {len(value)} characters; the limit is {limit} "
                                "(MemoryConfig.max_instruction_chars)")
    return value


def _copy(profile: Profile) -> Profile:
    """A copy a caller may change without changing the cached one. Its rules are new detached instances,
    as a closed session would give them: a copy made by ``model_copy`` would share the cached rule's ORM
    state, and a session given it would write through to the cached object."""
    def fresh(rule: StyleRule) -> StyleRule:
        copy = StyleRule(**rule.model_dump())
        make_transient_to_detached(copy)
        return copy

    return profile.model_copy(update={"rules": [fresh(r) for r in profile.rules],
                                      "proposals": [fresh(r) for r in profile.proposals]})


class RulesHandle:
    """``mem.rules(user_id)``: add, remove, list, accept, reject, enable/disable and undo style rules."""

    def __init__(self, profiles: ProfileStore, user_id: str, namespace: str = "default") -> None:
        self.profiles = profiles
        self.user_id, self.namespace = check_scope(user_id, namespace)

    def list(self, include_proposed: bool = True, include_disabled: bool = True) -> list[StyleRule]:
        with Session(self.profiles.engine, expire_on_commit=False) as s:
            rules = _rules(s, self.user_id, self.namespace)
        return [r for r in rules if r.status != "rejected"
                and (include_proposed or r.status == "active") and (include_disabled or r.enabled)]

    def get(self, rule_id: str) -> StyleRule:
        with Session(self.profiles.engine, expire_on_commit=False) as s:
            return self._find(s, rule_id)

    @_serialized
    def add(self, text: str, checker: str | None = None, params: dict[str, Any] | None = None, *,
            source: str = "user", actor: str = "api", proposed: bool = False,
            source_turn_ids: list[str] | None = None) -> StyleRule:
        """Adds a rule; its checker is recognised from the wording unless given explicitly.
        Adding a rule that exists already (same wording) returns the existing one."""
        from memstore.instructions import checkers

        text = check_text(text, MAX_RULE_CHARS, "rule text")
        if checker is not None:
            try:
                chk: Any = checkers.validate_checker(checker, params or {})
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from exc
        else:
            if params:
                raise InvalidInputError("params need a checker")
            chk = checkers.recognize(text)
        with session_scope(self.profiles.engine) as s:
            row = _row(s, self.user_id, self.namespace, create=True)
            assert row is not None
            key = normalize_text(text)
            for existing in _rules(s, self.user_id, self.namespace):
                if normalize_text(existing.text) == key:
                    if existing.status == "rejected" and source == "user":
                        existing.status, existing.enabled = "active", True
                        s.add(existing)
                        _snapshot(s, row, actor, f"re-added rule {existing.id}")
                    return existing
            rule = StyleRule(user_id=self.user_id, namespace=self.namespace, text=text,
                             checker=chk.kind if chk else None, params=dict(chk.params) if chk else {},
                             source=source, status="proposed" if proposed else "active",
                             source_turn_ids=list(source_turn_ids or []))
            s.add(rule)
            s.flush()
            _snapshot(s, row, actor, f"{'proposed' if proposed else 'added'} rule {rule.id}")
        return rule

    def propose(self, text: str, source_turn_ids: list[str] | None = None, actor: str = "llm") -> StyleRule:
        """An extracted rule: applied at once when ``auto_accept_rules`` (the default), else a proposal."""
        return self.add(text, source="extracted", actor=actor, proposed=not self.profiles.auto_accept_rules,
                        source_turn_ids=source_turn_ids)

    @_serialized
    def remove(self, rule_id: str, actor: str = "api") -> StyleRule:
        with session_scope(self.profiles.engine) as s:
            rule = self._find(s, rule_id)
            s.delete(rule)
            row = _row(s, self.user_id, self.namespace, create=True)
            assert row is not None
            _snapshot(s, row, actor, f"removed rule {rule_id}")
        return rule

    def remove_matching(self, text: str, actor: str = "llm") -> StyleRule | None:
        """Removes the rule with this wording (normalised), if any: "you can use capitals again"."""
        key = normalize_text(text)
        for rule in self.list():
            if normalize_text(rule.text) == key:
                return self.remove(rule.id, actor)
        return None

    @_serialized
    def _set(self, rule_id: str, actor: str, reason: str, **fields: Any) -> StyleRule:
        with session_scope(self.profiles.engine) as s:
            rule = self._find(s, rule_id)
            for k, v in fields.items():
                setattr(rule, k, v)
            rule.updated_at = utcnow()
            s.add(rule)
            row = _row(s, self.user_id, self.namespace, create=True)
            assert row is not None
            _snapshot(s, row, actor, f"{reason} rule {rule_id}")
        return rule

    def accept(self, rule_id: str, actor: str = "api") -> StyleRule:
        return self._set(rule_id, actor, "accepted", status="active", enabled=True)

    def reject(self, rule_id: str, actor: str = "api") -> StyleRule:
        return self._set(rule_id, actor, "rejected", status="rejected", enabled=False)

    def enable(self, rule_id: str, enabled: bool = True, actor: str = "api") -> StyleRule:
        return self._set(rule_id, actor, "enabled" if enabled else "disabled", enabled=enabled)

    def versions(self) -> list[ProfileVersion]:
        with Session(self.profiles.engine, expire_on_commit=False) as s:
            return list(s.exec(select(ProfileVersion).where(
                ProfileVersion.user_id == self.user_id, ProfileVersion.namespace == self.namespace,
            ).order_by(col(ProfileVersion.version))).all())

    @_serialized
    def undo(self, actor: str = "api") -> Profile:
        """Restores the profile and rules as they were before the last change (repeatable)."""
        with session_scope(self.profiles.engine) as s:
            row = _row(s, self.user_id, self.namespace)
            if row is None or row.version == 0:
                raise NotFoundError("nothing to undo")
            latest = s.exec(select(ProfileVersion).where(
                ProfileVersion.user_id == self.user_id, ProfileVersion.namespace == self.namespace,
                ProfileVersion.version == row.version)).one()
            target = int(latest.snapshot.get("restored_version", latest.version)) - 1
            if target < 0:
                raise NotFoundError("nothing to undo")
            snap = s.exec(select(ProfileVersion).where(
                ProfileVersion.user_id == self.user_id, ProfileVersion.namespace == self.namespace,
                ProfileVersion.version == target)).one().snapshot
            row.about_user = snap.get("about_user", "")
            row.response_style = snap.get("response_style", "")
            wanted = {r["id"]: r for r in snap.get("rules", [])}
            for rule in _rules(s, self.user_id, self.namespace):
                if rule.id not in wanted:
                    s.delete(rule)
            s.flush()
            for rid, data in wanted.items():
                # a snapshot restores this scope's own rules only: the id is looked up within the scope, and a
                # rule the snapshot names by another scope's id is restored under a new id in this scope
                rule = s.exec(select(StyleRule).where(StyleRule.id == rid, StyleRule.user_id == self.user_id,
                                                      StyleRule.namespace == self.namespace)).first()
                restored = StyleRule.model_validate(
                    {k: v for k, v in data.items() if k not in ("pk", "user_id", "namespace")}
                    | {"user_id": self.user_id, "namespace": self.namespace})
                if rule is None:
                    if s.exec(select(StyleRule.pk).where(StyleRule.id == rid)).first() is not None:
                        restored.id = new_id()
                    s.add(restored)
                else:
                    for k in ("text", "checker", "params", "source", "status", "enabled"):
                        setattr(rule, k, getattr(restored, k))
                    s.add(rule)
            s.flush()
            _snapshot(s, row, actor, f"undo: restored version {target}", {"restored_version": target})
        return self.profiles.get(self.user_id, self.namespace)

    def _find(self, s: Session, rule_id: str) -> StyleRule:
        if not isinstance(rule_id, str) or not rule_id:
            raise InvalidInputError("rule id must be a non-empty string")
        rule = s.exec(select(StyleRule).where(StyleRule.id == rule_id, StyleRule.user_id == self.user_id,
                                              StyleRule.namespace == self.namespace)).first()
        if rule is None:
            raise NotFoundError(f"no rule with id {rule_id!r} for user {self.user_id!r}")
        return rule


@functools.cache
def _state_statement() -> Any:
    """One row that changes whenever a scope's profile or rules do: the profile row's pk, version and
    update time, and the count, highest pk and latest update time of its rules. Built once."""
    u, ns = bindparam("u"), bindparam("ns")

    def of_profile(column: Any) -> Any:
        return select(column).where(ProfileRecord.user_id == u, ProfileRecord.namespace == ns).scalar_subquery()

    return select(func.count(col(StyleRule.pk)), func.max(StyleRule.pk), func.max(StyleRule.updated_at),
                  of_profile(ProfileRecord.pk), of_profile(ProfileRecord.version),
                  of_profile(ProfileRecord.updated_at)).where(StyleRule.user_id == u, StyleRule.namespace == ns)


class ProfileStore:
    """Profiles, style rules and compliance records in the SQL database, every query scoped by
    (user_id, namespace). ``Memory.profiles``; ``rules(user_id)`` gives one scope's rules.

    ``get`` runs on every request, so the profiles it read are kept per process (``cache_size`` scopes) and
    reused while the scope's state row (:func:`_state_statement`, one indexed look-up on a plain connection)
    is unchanged; every write, from this process or another, changes it."""

    def __init__(self, engine: Engine, *, max_instruction_chars: int = 1500, auto_accept_rules: bool = True,
                 cache_size: int = 4096) -> None:
        self.engine = engine
        self.max_instruction_chars = max_instruction_chars
        self.auto_accept_rules = auto_accept_rules
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], Profile]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def rules(self, user_id: str, namespace: str = "default") -> RulesHandle:
        return RulesHandle(self, user_id, namespace)

    def get(self, user_id: str, namespace: str = "default") -> Profile:
        """The profile as injected: the two fields, active enabled rules, and proposals."""
        user_id, namespace = check_scope(user_id, namespace)
        scope = (user_id, namespace)
        with self.engine.connect() as conn:
            state = tuple(conn.execute(_state_statement(), {"u": user_id, "ns": namespace}).one())
        with self._cache_lock:
            hit = self._cache.get(scope)
            if hit is not None and hit[0] == state:
                self._cache.move_to_end(scope)
                return _copy(hit[1])
        with Session(self.engine, expire_on_commit=False) as s:
            row = _row(s, user_id, namespace)
            rules = _rules(s, user_id, namespace)
        profile = Profile(
            user_id=user_id, namespace=namespace,
            about_user=row.about_user if row else "", response_style=row.response_style if row else "",
            rules=[r for r in rules if r.status == "active" and r.enabled],
            proposals=[r for r in rules if r.status == "proposed"],
            version=row.version if row else 0, updated_at=row.updated_at if row else None,
        )
        if self.cache_size > 0:
            with self._cache_lock:  # kept under the state read before it: a write in between is seen next time
                self._cache[scope] = (state, profile)
                self._cache.move_to_end(scope)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return _copy(profile)

    @_serialized
    def set_instructions(self, user_id: str, namespace: str = "default", *, about_user: str | None = None,
                         response_style: str | None = None, actor: str = "api") -> Profile:
        """Sets either or both custom-instruction fields ("" clears one). Too-long text is an error."""
        user_id, namespace = check_scope(user_id, namespace)
        limit = self.max_instruction_chars
        about = None if about_user is None else _check_instruction(about_user, "about_user", limit)
        style = None if response_style is None else _check_instruction(response_style, "response_style", limit)
        if about is None and style is None:
            raise InvalidInputError("give about_user and/or response_style")
        with session_scope(self.engine) as s:
            row = _row(s, user_id, namespace, create=True)
            assert row is not None
            changed = []
            if about is not None and about != row.about_user:
                row.about_user = about
                changed.append("about_user")
            if style is not None and style != row.response_style:
                row.response_style = style
                changed.append("response_style")
            if changed:
                _snapshot(s, row, actor, "set " + " and ".join(changed))
        return self.get(user_id, namespace)

    def record_compliance(self, user_id: str, namespace: str, response_id: str | None,
                          results: list[tuple[StyleRule, bool, str]], attempt: int = 1) -> None:
        with session_scope(self.engine) as s:
            for rule, passed, detail in results:
                s.add(ComplianceRecord(user_id=user_id, namespace=namespace, response_id=response_id, rule_id=rule.id,
                                       rule_text=rule.text, checker=rule.checker or "", passed=passed, detail=detail,
                                       attempt=attempt))


    def compliance(self, user_id: str, namespace: str = "default") -> list[dict[str, Any]]:
        """Per checkable rule: replies checked, replies that passed, the pass rate.
        There is one record per reply and rule: the final attempt when enforce_rules retried."""
        user_id, namespace = check_scope(user_id, namespace)
        with Session(self.engine) as s:
            rows = s.exec(select(
                ComplianceRecord.rule_id, ComplianceRecord.rule_text, ComplianceRecord.checker, func.count(),
                func.sum(col(ComplianceRecord.passed).cast(Integer)), func.max(ComplianceRecord.created_at),
            ).where(ComplianceRecord.user_id == user_id, ComplianceRecord.namespace == namespace)
              .group_by(ComplianceRecord.rule_id, ComplianceRecord.rule_text, ComplianceRecord.checker)).all()
        return [{"rule_id": rid, "rule": text, "checker": chk, "checked": int(n), "passed": int(p or 0),
                 "rate": (int(p or 0) / int(n)) if n else None, "last_checked": last}
                for rid, text, chk, n, p, last in rows]
