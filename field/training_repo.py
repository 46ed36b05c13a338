"""SQL of training and drill attendance records. Nothing here commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from field.repo import SITE_SCOPE, Scope


@dataclass(slots=True)
class TrainingRow:
    id: int
    merchant_id: str
    kind: str
    held_at: datetime
    attendees: int
    names: str
    note: str
    recorded_by: str
    recorded_at: datetime
    ledger_entry_id: int | None
    no_credit: str


MERCHANT_IN_SCOPE = f"""
SELECT 1 FROM merchant m WHERE m.id = %(id)s
  AND (%(merchant)s::text IS NULL OR m.id = %(merchant)s)
  AND ((%(worker)s::text IS NULL AND %(communities)s::text[] IS NULL)
       OR EXISTS (SELECT 1 FROM site s WHERE s.merchant_id = m.id AND {SITE_SCOPE}))
"""


def merchant_in_scope(conn: Connection[Any], *, merchant_id: str, scope: Scope) -> bool:
    """Whether the caller may see this merchant: itself; a worker or a community admin through one of its sites."""
    return conn.execute(MERCHANT_IN_SCOPE, {"id": merchant_id, **scope.params()}).fetchone() is not None


INSERT_TRAINING = """
INSERT INTO training_record (merchant_id, kind, held_at, attendees, names, note, recorded_by, recorded_at,
                             ledger_entry_id, no_credit)
VALUES (%(merchant)s, %(kind)s, %(held_at)s, %(attendees)s, %(names)s, %(note)s, %(by)s, %(at)s, %(entry)s,
        %(no_credit)s)
RETURNING id, merchant_id, kind, held_at, attendees, names, note, recorded_by, recorded_at, ledger_entry_id, no_credit
"""
SELECT_TRAININGS = """
SELECT id, merchant_id, kind, held_at, attendees, names, note, recorded_by, recorded_at, ledger_entry_id, no_credit
FROM training_record WHERE merchant_id = %s ORDER BY held_at DESC, id DESC LIMIT 200
"""


def insert_training(conn: Connection[Any], **values: Any) -> TrainingRow:
    """Record attendance (and the ledger entry it earned, or why none)."""
    with conn.cursor(row_factory=class_row(TrainingRow)) as cur:
        row = cur.execute(INSERT_TRAINING, values).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return row


def list_trainings(conn: Connection[Any], *, merchant_id: str) -> list[TrainingRow]:
    """A merchant's records, newest first."""
    with conn.cursor(row_factory=class_row(TrainingRow)) as cur:
        return cur.execute(SELECT_TRAININGS, (merchant_id,)).fetchall()
