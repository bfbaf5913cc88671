"""Export, import, forget and listing of users: everything stored about a user, in one versioned format."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Engine, Integer, delete, func
from sqlmodel import Session, SQLModel, col, select

from memstore.errors import ImportFormatError
from memstore.records import (
    ComplianceRecord,
    Feedback,
    MemoryEvent,
    MemoryRecord,
    ProfileRecord,
    ProfileVersion,
    StyleRule,
    Turn,
    content_hash,
    utcnow,
)
from memstore.storage.db import session_scope

FORMAT = "memstore.export"
VERSION = 1
# section name -> table; memories are handled first so that events can refer to them
SECTIONS: dict[str, type[SQLModel]] = {
    "memories": MemoryRecord,
    "events": MemoryEvent,
    "profiles": ProfileRecord,
    "profile_versions": ProfileVersion,
    "rules": StyleRule,
    "turns": Turn,
    "feedback": Feedback,
    "compliance": ComplianceRecord,
}
_RENAMED = {"metadata": "meta"}


def _dump(row: SQLModel) -> dict[str, Any]:
    d = row.model_dump(mode="json", exclude={"pk", "indexed"})
    if "meta" in d:
        d["metadata"] = d.pop("meta")
    return d


def _scoped(q: Any, table: Any, user_id: str, namespace: str | None) -> Any:
    q = q.where(table.user_id == user_id)
    if namespace is not None:
        q = q.where(table.namespace == namespace)
    return q


def export_user(engine: Engine, user_id: str, namespace: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "exported_at": utcnow().isoformat(),
                           "user_id": user_id, "namespace": namespace}
    with Session(engine) as s:
        for name, table in SECTIONS.items():
            order = getattr(table, "pk", None)
            q = _scoped(select(table), table, user_id, namespace)
            if order is not None:
                q = q.order_by(order)
            out[name] = [_dump(r) for r in s.exec(q).all()]
    return out


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: str
    version: int
    user_id: str


def _load(data: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(data, Path) or (isinstance(data, str) and not data.lstrip().startswith("{")):
        try:
            data = Path(data).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ImportFormatError(f"cannot read export file {data}: {exc}") from exc
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"the export is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ImportFormatError("an export must be a JSON object")
    try:
        env = _Envelope.model_validate(data)
    except ValidationError as exc:
        raise ImportFormatError(f"not a memstore export: {exc.errors()[0]['msg']} "
                                f"({'.'.join(map(str, exc.errors()[0]['loc']))})") from exc
    if env.format != FORMAT:
        raise ImportFormatError(f"not a memstore export (format {env.format!r})")
    if env.version > VERSION:
        raise ImportFormatError(f"export version {env.version} is newer than this memstore understands ({VERSION})")
    return data


def _rows(data: dict[str, Any], name: str, table: type[SQLModel], user_id: str) -> list[SQLModel]:
    raw = data.get(name, [])
    if not isinstance(raw, list):
        raise ImportFormatError(f"section {name!r} must be a list")
    rows = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ImportFormatError(f"{name}[{i}] must be an object")
        item = {_RENAMED.get(k, k): v for k, v in item.items()}
        if item.get("user_id") != user_id:
            raise ImportFormatError(f"{name}[{i}] belongs to another user ({item.get('user_id')!r})")
        try:
            row = table.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ImportFormatError(f"{name}[{i}]: {err['msg']} ({'.'.join(map(str, err['loc']))})") from exc
        rows.append(row)
    return rows


def import_data(engine: Engine, data: dict[str, Any] | str | Path) -> dict[str, int]:
    """Validates the whole export first, then writes it in one transaction (all or nothing).
    Records whose id already exists (or memories whose text is already stored) are skipped."""
    data = _load(data)
    user_id = data["user_id"]
    parsed = {name: _rows(data, name, table, user_id) for name, table in SECTIONS.items()}
    counts: dict[str, int] = {}
    with session_scope(engine) as s:
        for name, rows in parsed.items():
            table = SECTIONS[name]
            added = 0
            for row in rows:
                row_id = getattr(row, "id", None)
                if row_id is not None and s.exec(select(table).where(table.id == row_id)).first():  # type: ignore[attr-defined]
                    continue
                if isinstance(row, MemoryRecord):
                    row.content_hash = content_hash(row.text)
                    row.indexed = False
                    if s.exec(select(MemoryRecord).where(
                        MemoryRecord.user_id == row.user_id, MemoryRecord.namespace == row.namespace,
                        MemoryRecord.content_hash == row.content_hash)).first():
                        continue
                if isinstance(row, ProfileRecord) and s.exec(select(ProfileRecord).where(
                        ProfileRecord.user_id == row.user_id, ProfileRecord.namespace == row.namespace)).first():
                    continue
                if isinstance(row, ProfileVersion) and s.exec(select(ProfileVersion).where(
                        ProfileVersion.user_id == row.user_id, ProfileVersion.namespace == row.namespace,
                        ProfileVersion.version == row.version)).first():
                    continue
                s.add(row)
                s.flush()
                added += 1
            counts[name] = added
    return counts


def forget_rest(engine: Engine, user_id: str, namespace: str | None) -> dict[str, int]:
    """Deletes every non-memory record of the user (memories go through the store, for the vectors)."""
    counts: dict[str, int] = {}
    with session_scope(engine) as s:
        for name, table in SECTIONS.items():
            if table in (MemoryRecord, MemoryEvent):
                continue
            q = _scoped(delete(table), table, user_id, namespace)
            counts[name] = s.exec(q).rowcount  # type: ignore[call-overload]
    return counts


def list_users(engine: Engine) -> list[dict[str, Any]]:
    """(user, namespace) pairs with memory counts and their last activity, most recent first."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    with Session(engine) as s:
        mem_rows = s.exec(select(
            MemoryRecord.user_id, MemoryRecord.namespace,
            func.count(), func.sum(col(MemoryRecord.invalid_at).is_(None).cast(Integer)),
            func.max(MemoryRecord.updated_at),
        ).group_by(MemoryRecord.user_id, MemoryRecord.namespace)).all()
        for u, ns, total, valid, last in mem_rows:
            out[(u, ns)] = {"user_id": u, "namespace": ns, "memories": int(valid or 0),
                            "invalidated": int(total) - int(valid or 0), "rules": 0, "turns": 0,
                            "last_activity": last}
        for table, key in ((StyleRule, "rules"), (Turn, "turns")):
            for u, ns, n, last in s.exec(select(
                table.user_id, table.namespace, func.count(), func.max(table.created_at)  # type: ignore[attr-defined]
            ).group_by(table.user_id, table.namespace)).all():  # type: ignore[attr-defined]
                rec = out.setdefault((u, ns), {"user_id": u, "namespace": ns, "memories": 0, "invalidated": 0,
                                               "rules": 0, "turns": 0, "last_activity": last})
                rec[key] = int(n)
                if last and (rec["last_activity"] is None or last > rec["last_activity"]):
                    rec["last_activity"] = last
        profiles = select(ProfileRecord.user_id, ProfileRecord.namespace, ProfileRecord.updated_at)
        for u, ns, last in s.exec(profiles).all():
            out.setdefault((u, ns), {"user_id": u, "namespace": ns, "memories": 0, "invalidated": 0,
                                           "rules": 0, "turns": 0, "last_activity": last})
    return sorted(out.values(), key=lambda r: r["last_activity"] or datetime.min.replace(tzinfo=UTC), reverse=True)

