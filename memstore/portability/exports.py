"""Export, forget and the users listing: everything stored about a user, in one versioned format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Integer, delete, func
from sqlmodel import Session, SQLModel, col, select

from memstore.records import (
    ComplianceRecord,
    Feedback,
    MemoryEvent,
    MemoryRecord,
    ProfileRecord,
    ProfileVersion,
    StyleRule,
    Turn,
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

