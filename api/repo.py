"""SQL the API reads: tokens, scoped alarm lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row


@dataclass(slots=True)
class TokenRow:
    id: int
    role: str
    worker_id: str | None
    merchant_id: str | None
    label: str
    expires_at: datetime | None
    revoked_at: datetime | None


INSERT_TOKEN = """
INSERT INTO api_token (token_hash, role, worker_id, merchant_id, label, expires_at)
VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
"""
SELECT_TOKEN = """
UPDATE api_token SET last_used_at = now() WHERE token_hash = %s
RETURNING id, role, worker_id, merchant_id, label, expires_at, revoked_at
"""
REVOKE_TOKEN = "UPDATE api_token SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"


def insert_token(conn: Connection[Any], *, token_hash: bytes, role: str, worker_id: str | None,
                 merchant_id: str | None, label: str, expires_at: datetime | None) -> int:
    row = conn.execute(INSERT_TOKEN, (token_hash, role, worker_id, merchant_id, label, expires_at)).fetchone()
    assert row is not None  # noqa: S101
    return int(row[0] if isinstance(row, tuple) else row["id"])


def find_token(conn: Connection[Any], *, token_hash: bytes) -> TokenRow | None:
    """The token with this hash (and note that it was used)."""
    with conn.cursor(row_factory=class_row(TokenRow)) as cur:
        return cur.execute(SELECT_TOKEN, (token_hash,)).fetchone()


def revoke_token(conn: Connection[Any], *, token_id: int) -> bool:
    return conn.execute(REVOKE_TOKEN, (token_id,)).rowcount > 0


@dataclass(slots=True)
class AlarmListRow:
    id: int
    device_id: str
    site_id: str
    micro_grid_id: str
    type: str
    rule_id: str
    severity: int
    active: bool
    acknowledged: bool
    raised_at: datetime
    last_seen_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    disposition: str | None
    value: float | None
    peak_value: float | None
    count: int
    message: str


ALARM_LIST_COLUMNS = """a.id, a.device_id, a.site_id, a.micro_grid_id, a.type, a.rule_id, a.severity, a.active,
    a.acknowledged, a.raised_at, a.last_seen_at, a.cleared_at, a.acknowledged_at, a.acknowledged_by, a.closed_at,
    a.closed_by, a.disposition, a.value, a.peak_value, a.count, a.message"""

# Scope: NULL worker/merchant = admin (everything); a worker sees micro-grids they cover; a merchant
# their own sites.
SELECT_ALARMS = f"""
SELECT {ALARM_LIST_COLUMNS} FROM alarm a JOIN site s ON s.id = a.site_id
WHERE (%(worker)s::text IS NULL OR a.micro_grid_id IN
        (SELECT micro_grid_id FROM worker_micro_grid WHERE worker_id = %(worker)s))
  AND (%(merchant)s::text IS NULL OR s.merchant_id = %(merchant)s)
  AND (%(open_only)s = false OR a.closed_at IS NULL)
  AND (%(active)s::boolean IS NULL OR a.active = %(active)s)
  AND (%(acknowledged)s::boolean IS NULL OR a.acknowledged = %(acknowledged)s)
  AND (%(min_severity)s::int IS NULL OR a.severity >= %(min_severity)s)
  AND (%(site)s::text IS NULL OR a.site_id = %(site)s)
  AND (%(before_id)s::bigint IS NULL OR a.id < %(before_id)s)
ORDER BY a.id DESC LIMIT %(limit)s
"""
SELECT_ALARM_IN_SCOPE = f"""
SELECT {ALARM_LIST_COLUMNS} FROM alarm a JOIN site s ON s.id = a.site_id
WHERE a.id = %(id)s
  AND (%(worker)s::text IS NULL OR a.micro_grid_id IN
        (SELECT micro_grid_id FROM worker_micro_grid WHERE worker_id = %(worker)s))
  AND (%(merchant)s::text IS NULL OR s.merchant_id = %(merchant)s)
"""


def list_alarms(conn: Connection[Any], *, worker_id: str | None, merchant_id: str | None, open_only: bool,
                active: bool | None, acknowledged: bool | None, min_severity: int | None, site_id: str | None,
                before_id: int | None, limit: int) -> list[AlarmListRow]:
    """Alarms in the caller's scope, newest first, keyset-paginated by id."""
    with conn.cursor(row_factory=class_row(AlarmListRow)) as cur:
        return cur.execute(SELECT_ALARMS, {
            "worker": worker_id, "merchant": merchant_id, "open_only": open_only, "active": active,
            "acknowledged": acknowledged, "min_severity": min_severity, "site": site_id, "before_id": before_id,
            "limit": limit,
        }).fetchall()


def get_alarm_in_scope(conn: Connection[Any], *, alarm_id: int, worker_id: str | None,
                       merchant_id: str | None) -> AlarmListRow | None:
    """One alarm if the caller may see it."""
    with conn.cursor(row_factory=class_row(AlarmListRow)) as cur:
        return cur.execute(SELECT_ALARM_IN_SCOPE, {"id": alarm_id, "worker": worker_id,
                                                   "merchant": merchant_id}).fetchone()
