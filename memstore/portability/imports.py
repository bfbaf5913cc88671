"""Import of an export file: untrusted input, checked row by row as the write path that made it would check it,
kept inside the importing scope, and written all or nothing."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Engine, String, cast, or_, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from memstore.errors import ImportFormatError, InvalidInputError, StorageError
from memstore.portability.checks import (
    _CHUNK,
    ImportLimits,
    Scope,
    _check_row,
    _owners,
    _Plan,
    _pydantic_msg,
    _row_model,
)
from memstore.portability.exports import _RENAMED, FORMAT, SECTIONS, VERSION
from memstore.records import (
    ComplianceRecord,
    MemoryRecord,
    ProfileRecord,
    ProfileVersion,
    StyleRule,
    VectorTombstone,
    new_id,
    normalize_text,
    utcnow,
)
from memstore.storage.db import session_scope
from memstore.validate import check_scope


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: str
    version: int
    user_id: str


# ---- import -------------------------------------------------------------------------------------------
#
# An export file is untrusted input (it may have been edited, or written by someone else). Every row is checked
# as the write path that made it would check it (memstore.validate), every id stays inside the importing scope,
# and everything is written in one transaction with bulk inserts.

def _load(data: dict[str, Any] | str | Path, max_bytes: int) -> dict[str, Any]:
    if isinstance(data, Path) or (isinstance(data, str) and not data.lstrip().startswith("{")):
        try:
            size = Path(data).stat().st_size
            if size > max_bytes:
                raise ImportFormatError(_too_big(size, max_bytes))
            data = Path(data).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ImportFormatError(f"cannot read export file {data}: {exc}") from exc
    if isinstance(data, str):
        size = len(data.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise ImportFormatError(_too_big(size, max_bytes))
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ImportFormatError(f"the export is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ImportFormatError("an export must be a JSON object")
    try:
        env = _Envelope.model_validate(data)
    except ValidationError as exc:
        raise ImportFormatError(f"not a memstore export: {_pydantic_msg(exc)}") from exc
    if env.format != FORMAT:
        raise ImportFormatError(f"not a memstore export (format {env.format!r})")
    if env.version > VERSION:
        raise ImportFormatError(f"export version {env.version} is newer than this memstore understands ({VERSION})")
    return data


def _too_big(size: int, limit: int) -> str:
    return (f"the export is {size:,} bytes; the limit is {limit:,} bytes "
            "(MAX_IMPORT_BYTES; pass a larger max_bytes to import_data to raise it)")


def _parse(plan: _Plan, data: dict[str, Any], namespace: str | None) -> None:
    """Checks every row of every section (nothing is read from or written to the database here)."""
    sections = {}
    total = 0
    for name in SECTIONS:
        raw = data.get(name) or []
        if not isinstance(raw, list):
            raise ImportFormatError(f"section {name!r} must be a list")
        sections[name] = raw
        total += len(raw)
        if name == "profile_versions":
            total += sum(len(v["snapshot"].get("rules") or []) for v in raw
                         if isinstance(v, dict) and isinstance(v.get("snapshot"), dict)
                         and isinstance(v["snapshot"].get("rules"), list))
    if total > plan.limits.max_rows:
        raise ImportFormatError(f"the export has {total:,} rows; the limit is {plan.limits.max_rows:,} "
                                "(MAX_IMPORT_ROWS; pass a larger max_rows to import_data to raise it)")
    for name, raw in sections.items():
        rows = plan.parsed[name] = []
        for i, item in enumerate(raw):
            where = f"{name}[{i}]"
            if not isinstance(item, dict):
                raise ImportFormatError(f"{where} must be an object")
            item = {_RENAMED.get(k, k): v for k, v in item.items()}
            if item.get("user_id") != plan.user_id:
                raise ImportFormatError(f"{where} belongs to another user ({item.get('user_id')!r})")
            ns = item.get("namespace", "default")
            if namespace is not None and ns != namespace:
                raise ImportFormatError(f"{where} belongs to namespace {ns!r}, not the export's {namespace!r}")
            try:
                scope = check_scope(plan.user_id, ns)
                rows.append(_check_row(plan, name, item, scope, where))
            except InvalidInputError as exc:
                raise ImportFormatError(f"{where}: {exc}") from exc
    for name, key in (("memories", "id"), ("events", "id"), ("rules", "id"), ("turns", "id"),
                      ("feedback", "id"), ("profiles", None), ("profile_versions", "version")):
        seen: set[Any] = set()
        for i, row in enumerate(plan.parsed[name]):
            k = (row["namespace"], row[key] if key else None)
            if k in seen:
                raise ImportFormatError(f"{name}[{i}]: {'the profile' if key is None else f'{key} {k[1]!r}'} "
                                        "appears twice")
            seen.add(k)


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    values = list(values)
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


def _locate(s: Session, plan: _Plan) -> None:
    """Finds where the file's ids live already. An id stored in any other scope (or as a tombstone, or in
    another scope's rule history) is replaced by a fresh one everywhere in the file: rows of other scopes are
    never touched, and nothing imported points at them. Ids stored in the importing scope are ``present``."""
    for kind, owners in _owners().items():
        where = plan.ids[kind]
        for n, (table, column) in enumerate(owners):
            for chunk in _chunks(where):
                for value, u, ns in s.exec(select(column, table.user_id, table.namespace)  # type: ignore[call-overload]
                                           .where(col(column).in_(chunk))).all():
                    if (u, ns) != where[value]:
                        plan.remap[kind][value] = new_id()
                    elif n == 0:
                        plan.present[kind].add(value)
    for chunk in _chunks(plan.ids["memory"]):
        for value in s.exec(select(VectorTombstone.memory_id).where(col(VectorTombstone.memory_id).in_(chunk))):
            plan.remap["memory"][value] = new_id()
    rule_ids = plan.ids["rule"]
    text_col = cast(ProfileVersion.snapshot, String)
    ids = list(rule_ids)
    for k in range(0, len(ids), 100):  # rule ids kept in other scopes' histories (an undo brings them back)
        q = select(ProfileVersion.user_id, ProfileVersion.namespace, ProfileVersion.snapshot).where(
            or_(*[text_col.contains(r, autoescape=True) for r in ids[k:k + 100]]))
        for u, ns, snap in s.exec(q).all():
            for r in (snap or {}).get("rules") or []:
                rid = r.get("id") if isinstance(r, dict) else None
                if rid in rule_ids and rule_ids[rid] != (u, ns):
                    plan.remap["rule"][rid] = new_id()
    for kind, mapping in plan.remap.items():
        plan.present[kind] -= set(mapping)


def _apply_remap(plan: _Plan) -> None:
    new = plan.new
    for r in plan.parsed["memories"]:
        r["id"] = new("memory", r["id"])
        if r["superseded_by"] is not None:
            r["superseded_by"] = new("memory", r["superseded_by"])
        r["source_turn_ids"] = [new("turn", t) for t in r["source_turn_ids"]]
    for r in plan.parsed["events"]:
        r["id"], r["memory_id"] = new("event", r["id"]), new("memory", r["memory_id"])
    rules = plan.parsed["rules"] + [x for v in plan.parsed["profile_versions"] for x in v["snapshot"]["rules"]]
    for r in rules:
        r["id"] = new("rule", r["id"])
        r["source_turn_ids"] = [new("turn", t) for t in r["source_turn_ids"]]
    for r in plan.parsed["turns"]:
        r["id"] = new("turn", r["id"])
        if r["response_id"] is not None:
            r["response_id"] = new("response", r["response_id"])
    for r in plan.parsed["feedback"]:
        r["id"] = new("feedback", r["id"])
        for k in ("response_id", "other_response_id", "preferred"):
            if r[k] is not None:
                r[k] = new("response", r[k])
    for r in plan.parsed["compliance"]:
        r["rule_id"] = new("rule", r["rule_id"])
        if r["response_id"] is not None:
            r["response_id"] = new("response", r["response_id"])


def _scope(row: dict[str, Any]) -> Scope:
    return row["user_id"], row["namespace"]


def _naive(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _build(s: Session, plan: _Plan) -> dict[str, int]:
    """Decides what to insert: rows already in the scope (same id, same text, same profile) are skipped, and
    so is the history of a memory skipped as a duplicate. Returns the counts of the file's rows to insert."""
    p, out = plan.parsed, plan.rows
    # memories: one text per scope (the content hash), like add
    by_scope: dict[Scope, list[str]] = {}
    for r in p["memories"]:
        by_scope.setdefault(_scope(r), []).append(r["content_hash"])
    stored: set[tuple[Scope, str]] = set()
    for (u, ns), hashes in by_scope.items():
        for chunk in _chunks(set(hashes)):
            stored.update(((u, ns), h) for h in s.exec(select(MemoryRecord.content_hash).where(
                MemoryRecord.user_id == u, MemoryRecord.namespace == ns, col(MemoryRecord.content_hash).in_(chunk))))
    dropped: set[str] = set()
    for r in p["memories"]:
        key = (_scope(r), r["content_hash"])
        if r["id"] in plan.present["memory"]:
            continue
        if key in stored:
            dropped.add(r["id"])
            continue
        stored.add(key)
        out["memories"].append(r)
    out["events"] = [r for r in p["events"] if r["id"] not in plan.present["event"] and r["memory_id"] not in dropped]
    # rules: one wording per scope, like rules.add
    scopes = {_scope(r) for r in p["rules"]} | {_scope(r) for r in p["profiles"] + p["profile_versions"]}
    existing_rules = {sc: list(s.exec(select(StyleRule).where(
        StyleRule.user_id == sc[0], StyleRule.namespace == sc[1]).order_by(col(StyleRule.created_at),
                                                                           col(StyleRule.pk))).all())
        for sc in scopes}
    wordings = {(sc, normalize_text(r.text)) for sc, rules in existing_rules.items() for r in rules}
    for r in p["rules"]:
        key = (_scope(r), normalize_text(r["text"]))
        if r["id"] in plan.present["rule"] or key in wordings:
            continue
        wordings.add(key)
        out["rules"].append(r)
    # profiles and their history: imported only into a scope that has no profile yet
    existing = {sc: s.exec(select(ProfileRecord).where(ProfileRecord.user_id == sc[0],
                                                       ProfileRecord.namespace == sc[1])).first() for sc in scopes}
    versions: dict[Scope, list[dict[str, Any]]] = {}
    for v in p["profile_versions"]:
        versions.setdefault(_scope(v), []).append(v)
    profiles = {_scope(r): r for r in p["profiles"]}
    for sc in versions:
        if sc not in profiles:
            raise ImportFormatError(f"profile_versions of namespace {sc[1]!r} come without its profile")
    with_history: set[Scope] = set()
    for sc, prof in profiles.items():
        if existing[sc] is not None:
            continue
        vs = sorted(versions.get(sc, []), key=lambda v: v["version"])
        if vs and ([v["version"] for v in vs] != list(range(len(vs))) or prof["version"] != len(vs) - 1):
            raise ImportFormatError(f"profile of namespace {sc[1]!r}: version {prof['version']} does not match its "
                                    f"history (versions {[v['version'] for v in vs]}; expected 0..{prof['version']})")
        if not vs:
            prof["version"] = 0  # no history came with it: nothing to undo
        else:
            with_history.add(sc)
        out["profiles"].append(prof)
        out["profile_versions"].extend({**v, "snapshot": _json_snapshot(v["snapshot"])} for v in vs)
    out["turns"] = [r for r in p["turns"] if r["id"] not in plan.present["turn"]]
    out["feedback"] = [r for r in p["feedback"] if r["id"] not in plan.present["feedback"]]
    seen: set[tuple[Any, ...]] = set()
    for sc in {_scope(r) for r in p["compliance"]}:
        seen.update((sc, *k[:3], _naive(k[3])) for k in s.exec(select(
            ComplianceRecord.rule_id, ComplianceRecord.response_id, ComplianceRecord.attempt,
            ComplianceRecord.created_at).where(ComplianceRecord.user_id == sc[0], ComplianceRecord.namespace == sc[1])))
    for r in p["compliance"]:
        key = (_scope(r), r["rule_id"], r["response_id"], r["attempt"], _naive(r["created_at"]))
        if key not in seen:
            seen.add(key)
            out["compliance"].append(r)
    counts = {name: len(rows) for name, rows in out.items()}
    # a scope that gets rules without their history gets a new version, as rules.add would write
    for sc in {_scope(r) for r in out["rules"]} - with_history:
        _import_version(s, plan, sc, existing_rules.get(sc, []), profiles.get(sc), existing.get(sc))
    return counts


def _json_snapshot(snap: dict[str, Any]) -> dict[str, Any]:
    return {**snap, "rules": [_rule_json(r) for r in snap["rules"]]}


def _rule_json(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule as a snapshot holds it (StyleRule.model_dump(mode="json") without pk)."""
    return _row_model(StyleRule).model_validate(rule).model_dump(mode="json", exclude={"pk"})


def _import_version(s: Session, plan: _Plan, sc: Scope, old_rules: list[StyleRule], new_profile: dict[str, Any] | None,
                    row: ProfileRecord | None) -> None:
    """The profile version recording the rules an import added to ``sc`` (version 0 first if there is none)."""
    now = utcnow()
    if row is None and new_profile is None:
        new_profile = {"user_id": sc[0], "namespace": sc[1], "about_user": "", "response_style": "", "version": 0,
                       "created_at": now, "updated_at": now}
        plan.rows["profiles"].append(new_profile)
    current = new_profile if row is None else row.model_dump()
    assert current is not None
    version = int(current["version"])
    if version == 0 and not (row is not None and s.exec(select(ProfileVersion.pk).where(
            ProfileVersion.user_id == sc[0], ProfileVersion.namespace == sc[1])).first()):
        plan.rows["profile_versions"].append(_version_row(sc, 0, "initial", {"about_user": "", "response_style": "",
                                                                            "rules": []}, now))
    rules = [r.model_dump(mode="json", exclude={"pk"}) for r in old_rules] + [
        _rule_json(r) for r in plan.rows["rules"] if _scope(r) == sc]
    snap = {"about_user": current["about_user"], "response_style": current["response_style"], "rules": rules}
    plan.rows["profile_versions"].append(_version_row(sc, version + 1, "imported rules", snap, now))
    if row is None:
        current["version"], current["updated_at"] = version + 1, now
    else:
        plan.profile_bumps.append({"pk": row.pk, "version": version, "new": version + 1, "at": now})


def _version_row(sc: Scope, version: int, reason: str, snap: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"user_id": sc[0], "namespace": sc[1], "version": version, "snapshot": snap, "actor": "import",
            "reason": reason, "created_at": at}


def _write(s: Session, plan: _Plan) -> None:
    """Bulk inserts (executemany, ``_CHUNK`` rows a statement), all in the caller's transaction."""
    conn = s.connection()
    for bump in plan.profile_bumps:  # guarded by the old version: a concurrent change makes this import retry
        done = conn.execute(update(ProfileRecord).where(
            col(ProfileRecord.pk) == bump["pk"], col(ProfileRecord.version) == bump["version"],
        ).values(version=bump["new"], updated_at=bump["at"]))
        if done.rowcount != 1:
            raise _Retry()
    for name, table in SECTIONS.items():
        rows = plan.rows[name]
        sql_table = table.__table__  # type: ignore[attr-defined]
        keys = {c.key for c in sql_table.columns}
        for chunk in _chunks(rows):
            conn.execute(sql_table.insert(), [{_COLUMNS.get(k, k): v for k, v in r.items()
                                               if _COLUMNS.get(k, k) in keys} for r in chunk])


_COLUMNS = {"meta": "metadata"}  # attribute -> column name where they differ


class _Retry(Exception):
    pass


def import_data(engine: Engine, data: dict[str, Any] | str | Path, *, dry_run: bool = False,
                limits: ImportLimits | None = None) -> dict[str, int]:
    """Imports an export (a dict, a JSON string or a file path) into the scope it names; returns, per section,
    how many rows were written (``dry_run=True``: would be written; nothing is).

    Every row is checked as the write path that made it checks it (scope, text and its limit, kind, metadata,
    actor, rule checker; secrets redacted when ``limits.redact_secrets``), then everything is written in one
    transaction (all or nothing) with bulk inserts. Ids stay inside the importing scope: an id that exists in
    another scope is replaced by a fresh one throughout the file, so no row of another scope is touched or
    referred to. Rows already there (same id, same memory text, same rule wording, an existing profile) are
    skipped, so importing twice adds nothing. Vectors are not written here: the caller runs
    ``MemoryStore.repair_index()`` afterwards."""
    limits = limits or ImportLimits()
    data = _load(data, limits.max_bytes)
    user_id, namespace = data["user_id"], data.get("namespace")
    try:
        check_scope(user_id, namespace if namespace is not None else "default")
    except InvalidInputError as exc:
        raise ImportFormatError(f"the export's {exc}") from exc
    for attempt in range(5):
        plan = _Plan(user_id, limits)
        _parse(plan, data, namespace)
        try:
            with session_scope(engine) as s:
                _locate(s, plan)
                _apply_remap(plan)
                counts = _build(s, plan)
                if not dry_run:
                    _write(s, plan)
            return counts
        except (IntegrityError, OperationalError, _Retry) as exc:  # a concurrent writer got there first
            if attempt == 4:
                raise StorageError(f"import kept conflicting with concurrent writes; retry: {exc}") from exc
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")


