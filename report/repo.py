"""SQL of the figures the KPI API and the reports share (one computation serves both), and of the scheduled
reports' delivery record (table report_delivery, written only here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from core.repo import PATROL_COVERAGE_COUNTS

# A device is offline when it said so, or when it has been silent for two report intervals.
DEVICE_OFFLINE = """(coalesce(st.online, true) = false
    OR (st.last_seen_at IS NOT NULL AND st.last_seen_at < now() - make_interval(secs => 2 * d.report_interval_s)))"""
# The micro-grids of a scope: one micro-grid, one grid, one community, or every community (of a list, when the
# caller's token is limited to some: a street office sees them all).
SCOPE_MICRO_GRIDS = """
SELECT mg.id FROM micro_grid mg JOIN grid g ON g.id = mg.grid_id
WHERE (%(micro_grid)s::text IS NULL OR mg.id = %(micro_grid)s)
  AND (%(grid)s::text IS NULL OR g.id = %(grid)s)
  AND (%(community)s::text IS NULL OR g.community_id = %(community)s)
  AND (%(communities)s::text[] IS NULL OR g.community_id = ANY(%(communities)s::text[]))
"""
IN_SCOPE = f"a.micro_grid_id IN ({SCOPE_MICRO_GRIDS})"
IN_PERIOD = "a.raised_at >= %(since)s AND a.raised_at < %(until)s"
KPI_BY_TYPE = f"""
SELECT a.type, count(*)::int AS n FROM alarm a
WHERE {IN_SCOPE} AND {IN_PERIOD}
GROUP BY a.type ORDER BY a.type
"""
# Times are measured from raise (event time) to the person's action (wall clock); an alarm acknowledged
# only implicitly by its resolution counts with the resolution time.
KPI_DURATIONS = f"""
SELECT count(*)::int AS alarms,
       count(a.acknowledged_at)::int AS acknowledged,
       count(a.closed_at)::int AS resolved,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.acknowledged_at - a.raised_at))
           AS ack_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM a.acknowledged_at - a.raised_at))
           AS ack_p90,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.closed_at - a.raised_at)) AS resolve_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM a.closed_at - a.raised_at)) AS resolve_p90
FROM alarm a
WHERE {IN_SCOPE} AND {IN_PERIOD}
"""
KPI_UNREACHED = f"""
SELECT count(*)::int FROM notification n JOIN alarm a ON a.id = n.alarm_id
WHERE n.status = 'failed' AND {IN_SCOPE} AND {IN_PERIOD}
"""
KPI_DEVICES = f"""
SELECT count(*)::int AS devices,
       count(*) FILTER (WHERE {DEVICE_OFFLINE})::int AS offline,
       count(*) FILTER (WHERE st.last_seen_at IS NULL AND st.online IS NULL)::int AS never_seen,
       count(*) FILTER (WHERE NOT EXISTS (
           SELECT 1 FROM commissioning c WHERE c.device_id = d.id AND c.status = 'passed'))::int AS not_commissioned
FROM device d JOIN site s ON s.id = d.site_id LEFT JOIN device_state st ON st.device_id = d.id
WHERE d.active AND s.micro_grid_id IN ({SCOPE_MICRO_GRIDS})
"""
KPI_LAST_REAL_HAZARD = f"""
SELECT max(a.raised_at) FROM alarm a
WHERE a.disposition = 'real_hazard' AND {IN_SCOPE}
"""


@dataclass(slots=True)
class KpiRow:
    """The KPI figures of a scope and period (the KPI API's answer, and a report's summary)."""

    by_type: dict[str, int]
    alarms: int
    acknowledged: int
    resolved: int
    ack_p50: float | None
    ack_p90: float | None
    resolve_p50: float | None
    resolve_p90: float | None
    unreached: int
    devices: int
    offline: int
    never_seen: int
    not_commissioned: int
    last_real_hazard_at: datetime | None


def scope_params(
    *,
    micro_grid: str | None = None,
    grid: str | None = None,
    community: str | None = None,
    communities: list[str] | None = None,
) -> dict[str, Any]:
    """The query parameters that select a scope's micro-grids."""
    return {"micro_grid": micro_grid, "grid": grid, "community": community, "communities": communities}


def compute_kpis(conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime) -> KpiRow:
    """KPIs of a scope (scope_params) for alarms raised in [since, until)."""
    p = {**scope, "since": since, "until": until}
    with conn.cursor() as cur:
        by_type = {row[0]: row[1] for row in cur.execute(KPI_BY_TYPE, p).fetchall()}
        d = cur.execute(KPI_DURATIONS, p).fetchone()
        unreached = cur.execute(KPI_UNREACHED, p).fetchone()
        dev = cur.execute(KPI_DEVICES, p).fetchone()
        last = cur.execute(KPI_LAST_REAL_HAZARD, p).fetchone()
    if d is None or unreached is None or dev is None or last is None:
        raise LookupError("aggregate queries return one row")
    return KpiRow(
        by_type=by_type,
        alarms=d[0],
        acknowledged=d[1],
        resolved=d[2],
        ack_p50=d[3],
        ack_p90=d[4],
        resolve_p50=d[5],
        resolve_p90=d[6],
        unreached=unreached[0],
        devices=dev[0],
        offline=dev[1],
        never_seen=dev[2],
        not_commissioned=dev[3],
        last_real_hazard_at=last[0],
    )


# -- what only a report shows -------------------------------------------------------------------------------------

BY_TYPE_SEVERITY = f"""
SELECT a.type, a.severity, count(*)::int AS n FROM alarm a
WHERE {IN_SCOPE} AND {IN_PERIOD}
GROUP BY a.type, a.severity ORDER BY a.type, a.severity DESC
"""
# Who acted, and how fast: per person (acknowledged_by / closed_by) and per tier (the person's registry role;
# an admin's or a link's action without a worker counts as 'other').
RESPONSE_TIMES = f"""
WITH acted AS (
    SELECT 'ack' AS what, a.acknowledged_by AS actor, extract(epoch FROM a.acknowledged_at - a.raised_at) AS s
    FROM alarm a WHERE {IN_SCOPE} AND {IN_PERIOD} AND a.acknowledged_at IS NOT NULL
    UNION ALL
    SELECT 'resolve', a.closed_by, extract(epoch FROM a.closed_at - a.raised_at)
    FROM alarm a WHERE {IN_SCOPE} AND {IN_PERIOD} AND a.closed_at IS NOT NULL
)
SELECT x.what, GROUPING(x.actor, w.name) = 0 AS per_person, x.actor, w.name,
       coalesce(w.role, 'other') AS tier, count(*)::int AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY x.s) AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY x.s) AS p90
FROM acted x LEFT JOIN worker w ON w.id = x.actor
GROUP BY GROUPING SETS ((x.what, x.actor, w.name, coalesce(w.role, 'other')), (x.what, coalesce(w.role, 'other')))
ORDER BY per_person, tier, x.actor NULLS FIRST, x.what
"""
ALARMS_PER_DAY = f"""
SELECT (a.raised_at AT TIME ZONE %(tz)s)::date AS day, count(*)::int AS n FROM alarm a
WHERE {IN_SCOPE} AND {IN_PERIOD}
GROUP BY 1 ORDER BY 1
"""
# Merchants with premises in the scope: their standing now, and the ledger's entries in the period.
MERCHANT_SCORES = f"""
SELECT m.id, m.name, ms.score, ms.tier,
       count(e.id)::int AS entries, coalesce(sum(e.points), 0)::int AS points
FROM merchant m
LEFT JOIN merchant_score ms ON ms.merchant_id = m.id
LEFT JOIN score_entry e ON e.merchant_id = m.id AND e.at >= %(since)s AND e.at < %(until)s
WHERE m.id IN (SELECT s.merchant_id FROM site s WHERE s.micro_grid_id IN ({SCOPE_MICRO_GRIDS}))
GROUP BY m.id, m.name, ms.score, ms.tier
ORDER BY m.id
"""
SCOPE_NAME = """
SELECT name FROM community WHERE %(table)s = 'community' AND id = %(id)s
UNION ALL SELECT name FROM grid WHERE %(table)s = 'grid' AND id = %(id)s
UNION ALL SELECT name FROM micro_grid WHERE %(table)s = 'micro_grid' AND id = %(id)s
"""
SELECT_COMMUNITIES = """
SELECT id, name FROM community
WHERE %(communities)s::text[] IS NULL OR id = ANY(%(communities)s::text[])
ORDER BY id
"""


@dataclass(slots=True)
class ResponseRow:
    """Time to acknowledge ('ack') or resolve ('resolve') of one person (per_person) or one tier."""

    what: str
    per_person: bool
    actor: str | None
    name: str | None
    tier: str
    n: int
    p50: float | None
    p90: float | None


@dataclass(slots=True)
class MerchantScoreRow:
    """A merchant's standing now and the points its ledger recorded in the period."""

    id: str
    name: str
    score: int | None
    tier: str | None
    entries: int
    points: int


def alarms_by_type_severity(
    conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime
) -> list[tuple[str, int, int]]:
    """(type, severity, count) of the alarms raised in the period."""
    rows = conn.execute(BY_TYPE_SEVERITY, {**scope, "since": since, "until": until}).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def response_times(
    conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime
) -> list[ResponseRow]:
    """p50/p90 of time to acknowledge and resolve, per person and per tier."""
    with conn.cursor(row_factory=class_row(ResponseRow)) as cur:
        return cur.execute(RESPONSE_TIMES, {**scope, "since": since, "until": until}).fetchall()


def alarms_per_day(
    conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime, tz: str
) -> dict[date, int]:
    """Alarms raised per local day."""
    rows = conn.execute(ALARMS_PER_DAY, {**scope, "since": since, "until": until, "tz": tz}).fetchall()
    return {r[0]: r[1] for r in rows}


def merchant_scores(
    conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime
) -> list[MerchantScoreRow]:
    """Merchants with premises in the scope, their tier and the period's ledger points."""
    with conn.cursor(row_factory=class_row(MerchantScoreRow)) as cur:
        return cur.execute(MERCHANT_SCORES, {**scope, "since": since, "until": until}).fetchall()


def scope_name(conn: Connection[Any], *, table: str, id: str) -> str | None:
    """The registry name of a community, grid or micro-grid."""
    row = conn.execute(SCOPE_NAME, {"table": table, "id": id}).fetchone()
    return None if row is None else str(row[0])


def list_communities(conn: Connection[Any], *, communities: list[str] | None) -> list[tuple[str, str]]:
    """(id, name) of every community, or of those listed."""
    return [(r[0], r[1]) for r in conn.execute(SELECT_COMMUNITIES, {"communities": communities}).fetchall()]


# -- the work on foot (issue 21's tables, read here as every other stage's are) ---------------------------------------

SITE_IN_SCOPE = f"w.site_id IN (SELECT s.id FROM site s WHERE s.micro_grid_id IN ({SCOPE_MICRO_GRIDS}))"
# An order's deadline at an instant: the latest one set before it (opening, a failed re-inspection), so a later
# re-inspection does not rewrite whether the order was overdue when the period ended.
DEADLINE_AT_END = """coalesce((SELECT e.due_at FROM work_order_event e
    WHERE e.work_order_id = w.id AND e.due_at IS NOT NULL AND e.at < %(at_end)s
    ORDER BY e.at DESC, e.id DESC LIMIT 1), w.due_at)"""
# Overdue: open (not closed: a "fixed" order waits for its re-inspection) at the period's end, or now while the
# period runs, and past its deadline then.
WORK_ORDERS = f"""
SELECT count(*) FILTER (WHERE w.opened_at >= %(since)s AND w.opened_at < %(until)s)::int AS opened,
       count(*) FILTER (WHERE w.closed_at >= %(since)s AND w.closed_at < %(until)s)::int AS closed,
       count(*) FILTER (WHERE w.opened_at < %(at_end)s AND (w.closed_at IS NULL OR w.closed_at >= %(at_end)s)
                          AND {DEADLINE_AT_END} < %(at_end)s)::int AS overdue,
       (SELECT count(*) FROM work_order_event e JOIN work_order w ON w.id = e.work_order_id
        WHERE e.kind = 'reinspected' AND e.passed AND e.at >= %(since)s AND e.at < %(until)s
          AND {SITE_IN_SCOPE})::int AS reinspections_passed,
       (SELECT count(*) FROM work_order_event e JOIN work_order w ON w.id = e.work_order_id
        WHERE e.kind = 'reinspected' AND NOT e.passed AND e.at >= %(since)s AND e.at < %(until)s
          AND {SITE_IN_SCOPE})::int AS reinspections_failed
FROM work_order w
WHERE {SITE_IN_SCOPE}
"""
# A round belongs to the period in which it starts (as GET /api/v1/patrol-coverage counts it); a stop is missed when
# no one visited it before its round ended. A gas campaign's stops are its households: checked ones were reached.
PATROL_COVERAGE = f"""{PATROL_COVERAGE_COUNTS}
WHERE r.micro_grid_id IN ({SCOPE_MICRO_GRIDS}) AND r.due_start >= %(since)s AND r.due_start < %(until)s
GROUP BY r.kind ORDER BY r.kind
"""
# Drills dispatched in the period (a scheduled one counts once its time has come); response times run from the
# dispatch to each dispatched worker's acknowledgement and arrival.
DRILLS = f"""
SELECT count(DISTINCT d.id)::int AS drills,
       count(r.worker_id)::int AS dispatched,
       count(r.acknowledged_at)::int AS acknowledged,
       count(r.arrived_at)::int AS arrived,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.acknowledged_at - d.dispatched_at)) AS ack_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM r.acknowledged_at - d.dispatched_at)) AS ack_p90,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.arrived_at - d.dispatched_at)) AS arrive_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM r.arrived_at - d.dispatched_at)) AS arrive_p90
FROM drill d LEFT JOIN drill_response r ON r.drill_id = d.id
WHERE d.micro_grid_id IN ({SCOPE_MICRO_GRIDS}) AND d.dispatched_at >= %(since)s AND d.dispatched_at < %(until)s
  AND d.dispatched_at <= %(now)s
"""


@dataclass(slots=True)
class WorkOrderRow:
    """Work orders of a scope: opened and closed in the period, overdue at its end (or now), re-inspections."""

    opened: int
    closed: int
    overdue: int
    reinspections_passed: int
    reinspections_failed: int


@dataclass(slots=True)
class PatrolRow:
    """One kind of round's stops in the period: due, visited, checked, nobody home, missed."""

    kind: str
    due: int
    visited: int
    checked: int
    not_home: int
    missed: int


@dataclass(slots=True)
class DrillRow:
    """Drills dispatched in the period, the workers dispatched, and their times to acknowledge and arrive."""

    drills: int
    dispatched: int
    acknowledged: int
    arrived: int
    ack_p50: float | None
    ack_p90: float | None
    arrive_p50: float | None
    arrive_p90: float | None


def work_orders(
    conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime, now: datetime
) -> WorkOrderRow:
    """Work orders on the scope's sites; overdue is counted at the period's end, or now if it has not ended."""
    params = {**scope, "since": since, "until": until, "at_end": min(until, now)}
    with conn.cursor(row_factory=class_row(WorkOrderRow)) as cur:
        row = cur.execute(WORK_ORDERS, params).fetchone()
    if row is None:
        raise LookupError("an aggregate query returns one row")
    return row


def patrol_coverage(
    conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime, now: datetime
) -> list[PatrolRow]:
    """Per kind of round started in the period: stops due, visited, checked, nobody home, missed."""
    with conn.cursor(row_factory=class_row(PatrolRow)) as cur:
        return cur.execute(PATROL_COVERAGE, {**scope, "since": since, "until": until, "now": now}).fetchall()


def drills(
    conn: Connection[Any], *, scope: dict[str, Any], since: datetime, until: datetime, now: datetime
) -> DrillRow:
    """Drills dispatched in the period and p50/p90 of their workers' times to acknowledge and to arrive."""
    with conn.cursor(row_factory=class_row(DrillRow)) as cur:
        row = cur.execute(DRILLS, {**scope, "since": since, "until": until, "now": now}).fetchone()
    if row is None:
        raise LookupError("an aggregate query returns one row")
    return row


# -- scheduled delivery ---------------------------------------------------------------------------------------------

CLAIM_DELIVERY = """
INSERT INTO report_delivery (schedule, period, created_at) VALUES (%(schedule)s, %(period)s, %(now)s)
ON CONFLICT (schedule, period) DO NOTHING
RETURNING id
"""
SELECT_UNSENT = """
SELECT id FROM report_delivery
WHERE schedule = %(schedule)s AND period = %(period)s AND sent_at IS NULL AND attempts < %(max)s
FOR UPDATE SKIP LOCKED
"""
FINISH_DELIVERY = """
UPDATE report_delivery SET attempts = attempts + 1, sent_at = %(sent)s, error = %(error)s, updated_at = %(now)s
WHERE id = %(id)s
"""


def claim_delivery(
    conn: Connection[Any], *, schedule: str, period: str, now: datetime, max_attempts: int
) -> int | None:
    """The delivery of this schedule's report for this period if it is still to be sent (locked), else None."""
    conn.execute(CLAIM_DELIVERY, {"schedule": schedule, "period": period, "now": now})
    row = conn.execute(SELECT_UNSENT, {"schedule": schedule, "period": period, "max": max_attempts}).fetchone()
    return None if row is None else int(row[0])


def finish_delivery(
    conn: Connection[Any], *, delivery_id: int, sent: datetime | None, error: str, now: datetime
) -> None:
    """Record one attempt: sent (sent_at) or failed (error, retried on the next pass)."""
    conn.execute(FINISH_DELIVERY, {"id": delivery_id, "sent": sent, "error": error, "now": now})
