"""SQL of resident reports. Nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from field.repo import SITE_SCOPE, PhotoData, Recipient, Scope


@dataclass(slots=True)
class ReportRow:
    id: int
    site_id: str
    what: str
    place: str
    phone: str
    status: str
    created_at: datetime
    taken_at: datetime | None
    taken_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    outcome: str
    work_order_id: int | None
    escalation: int
    rating: int | None
    rating_note: str
    rated_at: datetime | None
    site_name: str = ""
    micro_grid_id: str = ""
    photos: int = 0


@dataclass(slots=True)
class ReportSite:
    id: str
    name: str
    kind: str
    micro_grid_id: str
    grid_id: str
    community_id: str


REPORT_COLUMNS = """r.id, r.site_id, r.what, r.place, r.phone, r.status, r.created_at, r.taken_at, r.taken_by,
r.closed_at, r.closed_by, r.outcome, r.work_order_id, r.escalation, r.rating, r.rating_note, r.rated_at,
s.name AS site_name, s.micro_grid_id,
(SELECT count(*) FROM field_photo p WHERE p.resident_report_id = r.id)::int AS photos"""

SELECT_REPORT_SITE = """
SELECT s.id, s.name, s.kind, s.micro_grid_id, mg.grid_id, g.community_id
FROM site s JOIN micro_grid mg ON mg.id = s.micro_grid_id JOIN grid g ON g.id = mg.grid_id WHERE s.id = %s
"""


def get_site(conn: Connection[Any], *, site_id: str) -> ReportSite | None:
    """The site a report link names."""
    with conn.cursor(row_factory=class_row(ReportSite)) as cur:
        return cur.execute(SELECT_REPORT_SITE, (site_id,)).fetchone()


# Taken before counting, held to the commit: reports sent at the same moment would each count the others as not
# there yet. The sender's lock first, then the site's (always in this order: no deadlock).
LOCK_RATE = """
SELECT pg_advisory_xact_lock(hashtextextended('resident-report:client:' || %(client)s, 0)),
       pg_advisory_xact_lock(hashtextextended('resident-report:site:' || %(site)s, 0))
"""
COUNT_RECENT = """
SELECT count(*) FILTER (WHERE client_hash = %(client)s AND created_at > %(client_since)s),
       count(*) FILTER (WHERE client_hash = %(client)s AND created_at > %(day_since)s),
       count(*) FILTER (WHERE site_id = %(site)s AND created_at > %(site_since)s)
FROM resident_report WHERE created_at > %(day_since)s AND (client_hash = %(client)s OR site_id = %(site)s)
"""


def count_recent(
    conn: Connection[Any],
    *,
    client: str,
    site_id: str,
    client_since: datetime,
    day_since: datetime,
    site_since: datetime,
) -> tuple[int, int, int]:
    """Reports from this sender in the short window and the day, and on this site in its window (the sender and
    the site locked until the caller commits, so concurrent reports count each other)."""
    params = {
        "client": client,
        "site": site_id,
        "client_since": client_since,
        "day_since": day_since,
        "site_since": site_since,
    }
    conn.execute(LOCK_RATE, {"client": client, "site": site_id})
    row = conn.execute(COUNT_RECENT, params).fetchone()
    assert row is not None  # noqa: S101 - an aggregate returns one row
    return int(row[0]), int(row[1]), int(row[2])


INSERT_REPORT = """
INSERT INTO resident_report (site_id, what, place, phone, client_hash, receipt_hash, created_at)
VALUES (%(site)s, %(what)s, %(place)s, %(phone)s, %(client)s, %(receipt)s, %(at)s)
RETURNING id
"""


def insert_report(
    conn: Connection[Any], *, site_id: str, what: str, place: str, phone: str, client: str, receipt: str, at: datetime
) -> int:
    """A new report; returns its id."""
    params = {
        "site": site_id,
        "what": what,
        "place": place,
        "phone": phone,
        "client": client,
        "receipt": receipt,
        "at": at,
    }
    row = conn.execute(INSERT_REPORT, params).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return int(row[0])


SELECT_BY_RECEIPT = f"""
SELECT {REPORT_COLUMNS} FROM resident_report r JOIN site s ON s.id = r.site_id WHERE r.receipt_hash = %s
"""
LOCK_BY_RECEIPT = SELECT_BY_RECEIPT + " FOR UPDATE OF r"
SELECT_REPORT = f"""
SELECT {REPORT_COLUMNS} FROM resident_report r JOIN site s ON s.id = r.site_id
WHERE r.id = %(id)s AND %(merchant)s::text IS NULL AND {SITE_SCOPE}
"""
LOCK_REPORT = SELECT_REPORT + " FOR UPDATE OF r"
SELECT_REPORTS = f"""
SELECT {REPORT_COLUMNS} FROM resident_report r JOIN site s ON s.id = r.site_id
WHERE %(merchant)s::text IS NULL AND {SITE_SCOPE} AND (%(open_only)s = false OR r.status <> 'closed')
ORDER BY (r.status = 'closed'), r.id DESC LIMIT %(limit)s
"""


def get_by_receipt(conn: Connection[Any], *, receipt_hash: str, lock: bool = False) -> ReportRow | None:
    """The report a resident's receipt names."""
    with conn.cursor(row_factory=class_row(ReportRow)) as cur:
        return cur.execute(LOCK_BY_RECEIPT if lock else SELECT_BY_RECEIPT, (receipt_hash,)).fetchone()


def get_report(conn: Connection[Any], *, report_id: int, scope: Scope, lock: bool = False) -> ReportRow | None:
    """One report if its site is in the (staff) scope."""
    with conn.cursor(row_factory=class_row(ReportRow)) as cur:
        return cur.execute(LOCK_REPORT if lock else SELECT_REPORT, {"id": report_id, **scope.params()}).fetchone()


def list_reports(conn: Connection[Any], *, scope: Scope, open_only: bool, limit: int) -> list[ReportRow]:
    """Reports on sites in scope, open ones first, newest first."""
    params = {"open_only": open_only, "limit": limit, **scope.params()}
    with conn.cursor(row_factory=class_row(ReportRow)) as cur:
        return cur.execute(SELECT_REPORTS, params).fetchall()


UPDATE_TAKEN = """
UPDATE resident_report SET status = 'taken', taken_at = %(at)s, taken_by = %(by)s,
       work_order_id = COALESCE(%(order)s, work_order_id)
WHERE id = %(id)s
"""
UPDATE_CLOSED = """
UPDATE resident_report SET status = 'closed', closed_at = %(at)s, closed_by = %(by)s, outcome = %(outcome)s,
       taken_at = COALESCE(taken_at, %(at)s), taken_by = COALESCE(taken_by, %(by)s)
WHERE id = %(id)s
"""
UPDATE_RATED = (
    "UPDATE resident_report SET rating = %(rating)s, rating_note = %(note)s, rated_at = %(at)s WHERE id = %(id)s"
)
UPDATE_REPORT_ESCALATION = (
    "UPDATE resident_report SET escalation = %(step)s WHERE id = %(id)s AND escalation < %(step)s AND status = 'new'"
)


def mark_taken(conn: Connection[Any], *, report_id: int, by: str, at: datetime, order_id: int | None = None) -> None:
    """A worker took the report on (optionally as a work order)."""
    conn.execute(UPDATE_TAKEN, {"id": report_id, "by": by, "at": at, "order": order_id})


def mark_closed(conn: Connection[Any], *, report_id: int, by: str, at: datetime, outcome: str) -> None:
    """Dealt with: the outcome the resident will read."""
    conn.execute(UPDATE_CLOSED, {"id": report_id, "by": by, "at": at, "outcome": outcome})


def mark_rated(conn: Connection[Any], *, report_id: int, rating: int, note: str, at: datetime) -> None:
    """The resident's rating of the outcome (居民评事)."""
    conn.execute(UPDATE_RATED, {"id": report_id, "rating": rating, "note": note, "at": at})


def set_escalation(conn: Connection[Any], *, report_id: int, step: int) -> bool:
    """Record that an untaken report climbed to this step (False: it already had, or was taken)."""
    return conn.execute(UPDATE_REPORT_ESCALATION, {"id": report_id, "step": step}).rowcount == 1


# Only reports with a step of the ladder due (those at its top would otherwise fill the batch for good).
SELECT_UNTAKEN = f"""
SELECT {REPORT_COLUMNS} FROM resident_report r JOIN site s ON s.id = r.site_id
WHERE r.status = 'new'
  AND EXISTS (SELECT 1 FROM unnest(%(steps)s::int[], %(afters)s::interval[]) AS l(step, after)
              WHERE r.escalation < l.step AND r.created_at + l.after <= %(now)s)
ORDER BY r.created_at LIMIT %(limit)s
"""


def list_untaken(
    conn: Connection[Any], *, now: datetime, ladder: Sequence[tuple[int, timedelta]], limit: int
) -> list[ReportRow]:
    """Reports nobody has taken with a step of the ladder (step, time after the report) due, oldest first."""
    params = {"now": now, "limit": limit, "steps": [s for s, _ in ladder], "afters": [a for _, a in ladder]}
    with conn.cursor(row_factory=class_row(ReportRow)) as cur:
        return cur.execute(SELECT_UNTAKEN, params).fetchall()


INSERT_REPORT_NOTICE = """
INSERT INTO field_notice (resident_report_id, step, worker_id, title, body, next_attempt_at)
VALUES (%(report)s, %(step)s, %(worker)s, %(title)s, %(body)s, %(at)s)
ON CONFLICT DO NOTHING
"""


def insert_notice(
    conn: Connection[Any], *, report_id: int, step: int, recipient: Recipient, title: str, body: str, at: datetime
) -> bool:
    """Queue a message about a report to a worker (once per report, step and worker)."""
    params = {
        "report": report_id,
        "step": step,
        "worker": recipient.worker_id,
        "title": title,
        "body": body,
        "at": at,
    }
    return conn.execute(INSERT_REPORT_NOTICE, params).rowcount == 1


INSERT_REPORT_PHOTO = """
INSERT INTO field_photo (id, resident_report_id, content_type, size, width, height, sha256, data, stage, uploaded_by,
                         uploaded_at)
VALUES (%(id)s, %(report)s, %(content_type)s, %(size)s, %(width)s, %(height)s, %(sha256)s, %(data)s, 'resident',
        'resident', %(at)s)
"""
SELECT_REPORT_PHOTO_IDS = "SELECT id FROM field_photo WHERE resident_report_id = %s ORDER BY uploaded_at, id"
SELECT_REPORT_PHOTO = f"""
SELECT p.id, p.content_type, p.data, r.site_id
FROM field_photo p JOIN resident_report r ON r.id = p.resident_report_id JOIN site s ON s.id = r.site_id
WHERE p.id = %(photo)s AND r.id = %(id)s AND %(merchant)s::text IS NULL AND {SITE_SCOPE}
"""


def insert_photo(conn: Connection[Any], **values: Any) -> None:
    """A resident's checked photo under its random id."""
    conn.execute(INSERT_REPORT_PHOTO, values)


def photo_ids(conn: Connection[Any], *, report_id: int) -> list[str]:
    """A report's photos."""
    return [str(r[0]) for r in conn.execute(SELECT_REPORT_PHOTO_IDS, (report_id,)).fetchall()]


def get_photo(conn: Connection[Any], *, report_id: int, photo_id: str, scope: Scope) -> PhotoData | None:
    """A report's photo bytes for staff whose scope includes its site."""
    params = {"photo": photo_id, "id": report_id, **scope.params()}
    with conn.cursor(row_factory=class_row(PhotoData)) as cur:
        return cur.execute(SELECT_REPORT_PHOTO, params).fetchone()
