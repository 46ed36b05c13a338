"""SQL of the merchant score: the ledger, findings and the derived snapshot. Nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from core import repo as core_repo
from core.domain import Alarm

# Any constant works as long as every gridwatch process uses the same one.
SCORE_TICK_LOCK = 0x6777_7363_6F72_6531


@dataclass(slots=True)
class LedgerRow:
    id: int
    merchant_id: str
    at: datetime
    points: int
    code: str
    reason: str
    alarm_id: int | None
    finding_id: int | None
    site_id: str | None
    actor: str | None
    hazard: bool
    lock_until: datetime | None
    forced_tier: str | None
    forced_until: datetime | None
    corrects_id: int | None
    dedupe_key: str
    created_at: datetime


@dataclass(slots=True)
class MerchantRow:
    id: str
    community_id: str
    name: str


@dataclass(slots=True)
class SiteMerchantRow:
    site_id: str
    merchant_id: str | None
    community_id: str | None


@dataclass(slots=True)
class MerchantAlarm(Alarm):
    """An alarm on a merchant's premises (merchant_id None: a site without a merchant)."""

    merchant_id: str | None = None


@dataclass(slots=True)
class FindingRow:
    id: int
    site_id: str
    merchant_id: str
    kind: str
    code: str
    note: str
    found_at: datetime
    found_by: str
    due_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    close_note: str | None


@dataclass(slots=True)
class SnapshotRow:
    merchant_id: str
    merchant_name: str
    community_id: str
    score: int | None
    tier: str | None
    review: bool | None
    review_reasons: list[str] | None
    hazards: int | None
    locked_until: datetime | None
    forced_tier: str | None
    forced_until: datetime | None
    entries: int | None
    last_entry_id: int | None
    as_of: datetime | None


LEDGER_COLUMNS = """id, merchant_id, at, points, code, reason, alarm_id, finding_id, site_id, actor, hazard,
    lock_until, forced_tier, forced_until, corrects_id, dedupe_key, created_at"""

LOCK_MERCHANT = """
SELECT id, community_id, name FROM merchant WHERE id = %s FOR NO KEY UPDATE
"""
SELECT_MERCHANT = "SELECT id, community_id, name FROM merchant WHERE id = %s"
SELECT_MERCHANTS = "SELECT id, community_id, name FROM merchant ORDER BY id"


def lock_merchant(conn: Connection[Any], *, merchant_id: str) -> MerchantRow | None:
    """The merchant, locked so ledger writers for one merchant take turns (entries stay consistent)."""
    with conn.cursor(row_factory=class_row(MerchantRow)) as cur:
        return cur.execute(LOCK_MERCHANT, (merchant_id,)).fetchone()


def get_merchant(conn: Connection[Any], *, merchant_id: str) -> MerchantRow | None:
    """The merchant, unlocked."""
    with conn.cursor(row_factory=class_row(MerchantRow)) as cur:
        return cur.execute(SELECT_MERCHANT, (merchant_id,)).fetchone()


def list_merchants(conn: Connection[Any]) -> list[MerchantRow]:
    """Every merchant, by id."""
    with conn.cursor(row_factory=class_row(MerchantRow)) as cur:
        return cur.execute(SELECT_MERCHANTS).fetchall()


SELECT_SITE_MERCHANT = """
SELECT s.id AS site_id, s.merchant_id, m.community_id
FROM site s LEFT JOIN merchant m ON m.id = s.merchant_id WHERE s.id = %s
"""


def get_site_merchant(conn: Connection[Any], *, site_id: str) -> SiteMerchantRow | None:
    """A site and the merchant whose premises it is (if any)."""
    with conn.cursor(row_factory=class_row(SiteMerchantRow)) as cur:
        return cur.execute(SELECT_SITE_MERCHANT, (site_id,)).fetchone()


ALARM_FACTS_COLUMNS = core_repo.alarm_columns("a") + ", s.merchant_id"
SELECT_ALARM_FACTS = f"""
SELECT {ALARM_FACTS_COLUMNS} FROM alarm a JOIN site s ON s.id = a.site_id WHERE a.id = %s
"""
# Upkeep candidates: alarms of these types on merchants' premises, open now or closed after `since`.
SELECT_UPKEEP_ALARMS = f"""
SELECT {ALARM_FACTS_COLUMNS} FROM alarm a JOIN site s ON s.id = a.site_id
WHERE s.merchant_id IS NOT NULL AND a.type = ANY(%(types)s)
  AND (a.closed_at IS NULL OR a.closed_at > %(since)s) AND a.raised_at <= %(now)s
ORDER BY s.merchant_id, a.id
"""


def get_alarm_facts(conn: Connection[Any], *, alarm_id: int) -> MerchantAlarm | None:
    """An alarm with the merchant of its site."""
    with conn.cursor(row_factory=class_row(MerchantAlarm)) as cur:
        return cur.execute(SELECT_ALARM_FACTS, (alarm_id,)).fetchone()


def list_upkeep_alarms(
    conn: Connection[Any], *, alarm_types: Sequence[str], since: datetime, now: datetime
) -> list[MerchantAlarm]:
    """Alarms that may owe upkeep deductions, with their merchant."""
    with conn.cursor(row_factory=class_row(MerchantAlarm)) as cur:
        return cur.execute(SELECT_UPKEEP_ALARMS, {"types": list(alarm_types), "since": since, "now": now}).fetchall()


SELECT_ENTRIES = f"SELECT {LEDGER_COLUMNS} FROM score_entry WHERE merchant_id = %s ORDER BY at, id"
SELECT_ENTRIES_PAGE = f"""
SELECT {LEDGER_COLUMNS} FROM score_entry
WHERE merchant_id = %(merchant)s AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC LIMIT %(limit)s
"""
SELECT_ENTRY = f"SELECT {LEDGER_COLUMNS} FROM score_entry WHERE id = %s"
SELECT_ALL_ENTRIES = f"SELECT {LEDGER_COLUMNS} FROM score_entry ORDER BY merchant_id, at, id"


def list_entries(conn: Connection[Any], *, merchant_id: str) -> list[LedgerRow]:
    """A merchant's whole ledger in time order."""
    with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
        return cur.execute(SELECT_ENTRIES, (merchant_id,)).fetchall()


def list_entries_page(conn: Connection[Any], *, merchant_id: str, before_id: int | None, limit: int) -> list[LedgerRow]:
    """A page of a merchant's ledger, newest first, keyset-paginated by id."""
    with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
        return cur.execute(
            SELECT_ENTRIES_PAGE, {"merchant": merchant_id, "before": before_id, "limit": limit}
        ).fetchall()


def get_entry(conn: Connection[Any], *, entry_id: int) -> LedgerRow | None:
    """One ledger entry."""
    with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
        return cur.execute(SELECT_ENTRY, (entry_id,)).fetchone()


def list_all_entries(conn: Connection[Any]) -> list[LedgerRow]:
    """Every ledger entry (recompute)."""
    with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
        return cur.execute(SELECT_ALL_ENTRIES).fetchall()


INSERT_ENTRY = f"""
INSERT INTO score_entry (merchant_id, at, points, code, reason, alarm_id, finding_id, site_id, actor, hazard,
                         lock_until, forced_tier, forced_until, corrects_id, dedupe_key)
VALUES (%(merchant_id)s, %(at)s, %(points)s, %(code)s, %(reason)s, %(alarm_id)s, %(finding_id)s, %(site_id)s,
        %(actor)s, %(hazard)s, %(lock_until)s, %(forced_tier)s, %(forced_until)s, %(corrects_id)s, %(dedupe_key)s)
ON CONFLICT (merchant_id, dedupe_key) DO NOTHING
RETURNING {LEDGER_COLUMNS}
"""


def insert_entry(
    conn: Connection[Any],
    *,
    merchant_id: str,
    at: datetime,
    points: int,
    code: str,
    reason: str,
    dedupe_key: str,
    alarm_id: int | None = None,
    finding_id: int | None = None,
    site_id: str | None = None,
    actor: str | None = None,
    hazard: bool = False,
    lock_until: datetime | None = None,
    forced_tier: str | None = None,
    forced_until: datetime | None = None,
    corrects_id: int | None = None,
) -> LedgerRow | None:
    """Append one entry; None when an entry with this key exists already (idempotent)."""
    with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
        return cur.execute(
            INSERT_ENTRY,
            {
                "merchant_id": merchant_id,
                "at": at,
                "points": points,
                "code": code,
                "reason": reason,
                "alarm_id": alarm_id,
                "finding_id": finding_id,
                "site_id": site_id,
                "actor": actor,
                "hazard": hazard,
                "lock_until": lock_until,
                "forced_tier": forced_tier,
                "forced_until": forced_until,
                "corrects_id": corrects_id,
                "dedupe_key": dedupe_key,
            },
        ).fetchone()


UPSERT_SNAPSHOT = """
INSERT INTO merchant_score (merchant_id, score, tier, review, review_reasons, hazards, locked_until, forced_tier,
                            forced_until, entries, last_entry_id, as_of, updated_at)
VALUES (%(merchant_id)s, %(score)s, %(tier)s, %(review)s, %(review_reasons)s, %(hazards)s, %(locked_until)s,
        %(forced_tier)s, %(forced_until)s, %(entries)s, %(last_entry_id)s, %(as_of)s, now())
ON CONFLICT (merchant_id) DO UPDATE SET score = EXCLUDED.score, tier = EXCLUDED.tier, review = EXCLUDED.review,
    review_reasons = EXCLUDED.review_reasons, hazards = EXCLUDED.hazards, locked_until = EXCLUDED.locked_until,
    forced_tier = EXCLUDED.forced_tier, forced_until = EXCLUDED.forced_until, entries = EXCLUDED.entries,
    last_entry_id = EXCLUDED.last_entry_id, as_of = EXCLUDED.as_of, updated_at = now()
"""


def save_snapshot(
    conn: Connection[Any],
    *,
    merchant_id: str,
    score: int,
    tier: str,
    review: bool,
    review_reasons: Sequence[str],
    hazards: int,
    locked_until: datetime | None,
    forced_tier: str | None,
    forced_until: datetime | None,
    entries: int,
    last_entry_id: int | None,
    as_of: datetime,
) -> None:
    """Store the standing derived from the ledger."""
    conn.execute(
        UPSERT_SNAPSHOT,
        {
            "merchant_id": merchant_id,
            "score": score,
            "tier": tier,
            "review": review,
            "review_reasons": list(review_reasons),
            "hazards": hazards,
            "locked_until": locked_until,
            "forced_tier": forced_tier,
            "forced_until": forced_until,
            "entries": entries,
            "last_entry_id": last_entry_id,
            "as_of": as_of,
        },
    )


SNAPSHOT_COLUMNS = """m.id AS merchant_id, m.name AS merchant_name, m.community_id, ms.score, ms.tier, ms.review,
    ms.review_reasons, ms.hazards, ms.locked_until, ms.forced_tier, ms.forced_until, ms.entries, ms.last_entry_id,
    ms.as_of"""
SELECT_SNAPSHOT = f"""
SELECT {SNAPSHOT_COLUMNS} FROM merchant m LEFT JOIN merchant_score ms ON ms.merchant_id = m.id WHERE m.id = %s
"""
SELECT_SNAPSHOTS = f"""
SELECT {SNAPSHOT_COLUMNS} FROM merchant m LEFT JOIN merchant_score ms ON ms.merchant_id = m.id
WHERE (%(community)s::text IS NULL OR m.community_id = %(community)s)
ORDER BY ms.score NULLS LAST, m.id
"""


def get_snapshot(conn: Connection[Any], *, merchant_id: str) -> SnapshotRow | None:
    """The stored standing of one merchant (score fields None if never computed); None if no such merchant."""
    with conn.cursor(row_factory=class_row(SnapshotRow)) as cur:
        return cur.execute(SELECT_SNAPSHOT, (merchant_id,)).fetchone()


def list_snapshots(conn: Connection[Any], *, community_id: str | None) -> list[SnapshotRow]:
    """Every merchant (of a community) with its stored standing, lowest score first."""
    with conn.cursor(row_factory=class_row(SnapshotRow)) as cur:
        return cur.execute(SELECT_SNAPSHOTS, {"community": community_id}).fetchall()


FINDING_COLUMNS = """id, site_id, merchant_id, kind, code, note, found_at, found_by, due_at, closed_at, closed_by,
    close_note"""
INSERT_FINDING = f"""
INSERT INTO score_finding (site_id, merchant_id, kind, code, note, found_at, found_by, due_at)
VALUES (%(site_id)s, %(merchant_id)s, %(kind)s, %(code)s, %(note)s, %(found_at)s, %(found_by)s, %(due_at)s)
RETURNING {FINDING_COLUMNS}
"""
LOCK_FINDING = f"SELECT {FINDING_COLUMNS} FROM score_finding WHERE id = %s FOR UPDATE"
CLOSE_FINDING = f"""
UPDATE score_finding SET closed_at = %(at)s, closed_by = %(actor)s, close_note = %(note)s WHERE id = %(id)s
RETURNING {FINDING_COLUMNS}
"""
SELECT_OPEN_FINDINGS = f"""
SELECT {FINDING_COLUMNS} FROM score_finding WHERE merchant_id = %s AND closed_at IS NULL ORDER BY due_at, id
"""
SELECT_FINDINGS = f"""
SELECT {FINDING_COLUMNS} FROM score_finding WHERE %(merchant_id)s::text IS NULL OR merchant_id = %(merchant_id)s
ORDER BY merchant_id, id
"""
SELECT_OVERDUE_FINDINGS = f"""
SELECT {FINDING_COLUMNS} FROM score_finding WHERE closed_at IS NULL AND due_at < %s ORDER BY merchant_id, id
"""


def insert_finding(
    conn: Connection[Any],
    *,
    site_id: str,
    merchant_id: str,
    kind: str,
    code: str,
    note: str,
    found_at: datetime,
    found_by: str,
    due_at: datetime,
) -> FindingRow:
    """Record an inspection finding."""
    with conn.cursor(row_factory=class_row(FindingRow)) as cur:
        row = cur.execute(
            INSERT_FINDING,
            {
                "site_id": site_id,
                "merchant_id": merchant_id,
                "kind": kind,
                "code": code,
                "note": note,
                "found_at": found_at,
                "found_by": found_by,
                "due_at": due_at,
            },
        ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return row


def lock_finding(conn: Connection[Any], *, finding_id: int) -> FindingRow | None:
    """One finding, locked."""
    with conn.cursor(row_factory=class_row(FindingRow)) as cur:
        return cur.execute(LOCK_FINDING, (finding_id,)).fetchone()


def close_finding(conn: Connection[Any], *, finding_id: int, actor: str, at: datetime, note: str | None) -> FindingRow:
    """Mark a finding rectified."""
    with conn.cursor(row_factory=class_row(FindingRow)) as cur:
        row = cur.execute(CLOSE_FINDING, {"id": finding_id, "actor": actor, "at": at, "note": note}).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


def list_open_findings(conn: Connection[Any], *, merchant_id: str) -> list[FindingRow]:
    """A merchant's findings not yet rectified, soonest deadline first."""
    with conn.cursor(row_factory=class_row(FindingRow)) as cur:
        return cur.execute(SELECT_OPEN_FINDINGS, (merchant_id,)).fetchall()


def list_findings(conn: Connection[Any], *, merchant_id: str | None) -> list[FindingRow]:
    """Every finding, open or closed, of one merchant (or of all: None), by merchant and id."""
    with conn.cursor(row_factory=class_row(FindingRow)) as cur:
        return cur.execute(SELECT_FINDINGS, {"merchant_id": merchant_id}).fetchall()


def list_overdue_findings(conn: Connection[Any], *, now: datetime) -> list[FindingRow]:
    """Open findings past their deadline (every merchant)."""
    with conn.cursor(row_factory=class_row(FindingRow)) as cur:
        return cur.execute(SELECT_OVERDUE_FINDINGS, (now,)).fetchall()


SELECT_OPEN_ALARMS = f"""
SELECT {core_repo.alarm_columns("a")}
FROM alarm a JOIN site s ON s.id = a.site_id
WHERE s.merchant_id = %s AND a.closed_at IS NULL ORDER BY a.severity DESC, a.id
"""


def list_open_alarms(conn: Connection[Any], *, merchant_id: str) -> list[Alarm]:
    """Alarms still open on the merchant's premises, worst first."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(SELECT_OPEN_ALARMS, (merchant_id,)).fetchall()


TRY_TICK_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"


def try_tick_lock(conn: Connection[Any]) -> bool:
    """Take the score tick's transaction-scoped lock unless another process holds it."""
    row = conn.execute(TRY_TICK_LOCK, (SCORE_TICK_LOCK,)).fetchone()
    assert row is not None  # noqa: S101
    return bool(row["pg_try_advisory_xact_lock"] if isinstance(row, dict) else row[0])


# Verified alarms on merchants' premises resolved recently: the tick re-applies their (idempotent) entries,
# so a deduction is never missed if the resolve hook did not run.
SELECT_RESOLVED_ALARMS = f"""
SELECT {ALARM_FACTS_COLUMNS} FROM alarm a JOIN site s ON s.id = a.site_id
WHERE s.merchant_id IS NOT NULL AND a.disposition = 'real_hazard' AND a.closed_at > %(since)s
  AND a.closed_at <= %(now)s
  AND NOT EXISTS (SELECT 1 FROM score_entry e WHERE e.alarm_id = a.id)
ORDER BY a.closed_at, a.id
"""


def list_unscored_resolved_alarms(conn: Connection[Any], *, since: datetime, now: datetime) -> list[MerchantAlarm]:
    """Alarms resolved real_hazard on merchants' premises in (since, now] with no ledger entry yet."""
    with conn.cursor(row_factory=class_row(MerchantAlarm)) as cur:
        return cur.execute(SELECT_RESOLVED_ALARMS, {"since": since, "now": now}).fetchall()


LOCK_MERCHANTS = "SELECT id, community_id, name FROM merchant ORDER BY id FOR NO KEY UPDATE"


def lock_merchants(conn: Connection[Any]) -> list[MerchantRow]:
    """Every merchant, locked in id order (the tick's view; resolves for one merchant wait for it)."""
    with conn.cursor(row_factory=class_row(MerchantRow)) as cur:
        return cur.execute(LOCK_MERCHANTS).fetchall()


SELECT_BLOCKING_ALL = """
SELECT s.merchant_id, a.type, bool_or(a.closed_at IS NULL) AS open, max(a.closed_at) AS last_closed
FROM alarm a JOIN site s ON s.id = a.site_id
WHERE s.merchant_id IS NOT NULL AND a.type = ANY(%s)
GROUP BY s.merchant_id, a.type
"""


def list_blocking_alarms(
    conn: Connection[Any], *, alarm_types: Sequence[str]
) -> dict[tuple[str, str], tuple[bool, datetime | None]]:
    """Per (merchant, alarm type): whether one is open, and when the last one closed."""
    if not alarm_types:
        return {}
    found = {}
    for row in conn.execute(SELECT_BLOCKING_ALL, (list(alarm_types),)).fetchall():
        merchant, alarm_type, is_open, last_closed = row.values() if isinstance(row, dict) else row
        found[(merchant, alarm_type)] = (bool(is_open), last_closed)
    return found


def save_snapshots(conn: Connection[Any], *, snapshots: Sequence[dict[str, Any]]) -> None:
    """Store many standings at once (keys as save_snapshot's arguments)."""
    if not snapshots:
        return
    with conn.cursor() as cur:
        cur.executemany(UPSERT_SNAPSHOT, [{**s, "review_reasons": list(s["review_reasons"])} for s in snapshots])
