"""SQL the API runs: tokens, sessions, scoped alarms, devices and readings, registry CRUD (the KPIs'
SQL is report/repo.py's, shared with the reports).

Scope convention (SITE_SCOPE): worker, merchant and communities None mean an admin of every community;
a worker sees the micro-grids of their registry role (WORKER_MICRO_GRIDS), a merchant their own sites, an admin
limited to some communities those communities. Alarms are scoped by their site's current micro-grid, not the one
recorded when they were raised, so moving a site moves its open alarms with it. Every function takes the
connection first and never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, Connection, sql
from psycopg.rows import class_row, dict_row

from core import repo as core_repo
from core.db import OUTBOX_CHANNEL
from core.domain import FLAG_FIELDS, MEASUREMENT_FIELDS, STATE_FIELDS, Alarm
from report import repo as report_repo

# -- tokens and sessions ----------------------------------------------------------------------------------


@dataclass(slots=True)
class TokenRow:
    id: int
    role: str
    worker_id: str | None
    merchant_id: str | None
    label: str
    expires_at: datetime | None
    revoked_at: datetime | None
    worker_active: bool | None = None  # a worker token's worker is still active (None: not a worker token)
    last_used_at: datetime | None = None


@dataclass(slots=True)
class TokenListRow:
    id: int
    role: str
    worker_id: str | None
    merchant_id: str | None
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    communities: list[str] | None = None


INSERT_TOKEN = """
INSERT INTO api_token (token_hash, role, worker_id, merchant_id, label, expires_at)
VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
"""  # noqa: S105 - SQL, not a secret
SELECT_TOKEN = """
SELECT t.id, t.role, t.worker_id, t.merchant_id, t.label, t.expires_at, t.revoked_at, w.active AS worker_active,
       t.last_used_at
FROM api_token t LEFT JOIN worker w ON w.id = t.worker_id WHERE t.token_hash = %s
"""  # noqa: S105 - SQL, not a secret
# last_used_at is for a person auditing tokens, to the minutes: written at most every TOUCH_EVERY, not on every
# request (which made every read a write).
TOUCH_EVERY = timedelta(minutes=5)
TOUCH_TOKEN = "UPDATE api_token SET last_used_at = now() WHERE id = %s"  # noqa: S105 - SQL, not a secret
REVOKE_TOKEN = "UPDATE api_token SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"  # noqa: S105
SELECT_TOKEN_EXPIRY = "SELECT expires_at FROM api_token WHERE id = %s"  # noqa: S105
TOKEN_LIST_COLUMNS = """t.id, t.role, t.worker_id, t.merchant_id, t.label, t.created_at, t.expires_at, t.revoked_at,
    t.last_used_at,
    (SELECT array_agg(c.community_id ORDER BY c.community_id) FROM api_token_community c WHERE c.token_id = t.id)
        AS communities"""  # noqa: S105 - SQL, not a secret
# The tokens an admin limited to some communities may see and revoke: those of their communities' workers and
# merchants, and admin tokens limited to some of their communities (never an unlimited one).
TOKEN_SCOPE = """(%(communities)s::text[] IS NULL
    OR (SELECT w.community_id FROM worker w WHERE w.id = t.worker_id) = ANY(%(communities)s)
    OR (SELECT m.community_id FROM merchant m WHERE m.id = t.merchant_id) = ANY(%(communities)s)
    OR (t.role = 'admin' AND EXISTS (SELECT 1 FROM api_token_community c WHERE c.token_id = t.id)
        AND NOT EXISTS (SELECT 1 FROM api_token_community c
                        WHERE c.token_id = t.id AND NOT c.community_id = ANY(%(communities)s))))"""  # noqa: S105 - SQL
SELECT_TOKENS = f"""
SELECT {TOKEN_LIST_COLUMNS} FROM api_token t
WHERE {TOKEN_SCOPE} ORDER BY t.id LIMIT %(limit)s OFFSET %(offset)s
"""
SELECT_TOKEN_BY_ID = f"""
SELECT {TOKEN_LIST_COLUMNS} FROM api_token t WHERE t.id = %(id)s AND {TOKEN_SCOPE}
"""
INSERT_TOKEN_COMMUNITY = "INSERT INTO api_token_community (token_id, community_id) VALUES (%s, %s)"  # noqa: S105
SELECT_TOKEN_COMMUNITIES = "SELECT community_id FROM api_token_community WHERE token_id = %s ORDER BY community_id"  # noqa: S105
SELECT_WORKER_ROLE = "SELECT role FROM worker WHERE id = %s"


def insert_token(
    conn: Connection[Any],
    *,
    token_hash: bytes,
    role: str,
    worker_id: str | None,
    merchant_id: str | None,
    label: str,
    expires_at: datetime | None,
) -> int:
    """Store a token's digest; returns its id."""
    row = conn.execute(INSERT_TOKEN, (token_hash, role, worker_id, merchant_id, label, expires_at)).fetchone()
    assert row is not None  # noqa: S101
    return int(row[0] if isinstance(row, tuple) else row["id"])


def find_token(conn: Connection[Any], *, token_hash: bytes, now: datetime) -> TokenRow | None:
    """The token with this hash, with whether its worker is active (and note that it was used, every few
    minutes)."""
    with conn.cursor(row_factory=class_row(TokenRow)) as cur:
        row = cur.execute(SELECT_TOKEN, (token_hash,)).fetchone()
    if row is not None and (row.last_used_at is None or row.last_used_at < now - TOUCH_EVERY):
        conn.execute(TOUCH_TOKEN, (row.id,))
    return row


def revoke_token(conn: Connection[Any], *, token_id: int) -> bool:
    """Revoke a token (its web sessions die with it); False if unknown or already revoked."""
    return conn.execute(REVOKE_TOKEN, (token_id,)).rowcount > 0


def get_token_expiry(conn: Connection[Any], *, token_id: int) -> datetime | None:
    """When a token expires (None: never)."""
    row = conn.execute(SELECT_TOKEN_EXPIRY, (token_id,)).fetchone()
    return None if row is None else (row[0] if isinstance(row, tuple) else row["expires_at"])


def list_tokens(
    conn: Connection[Any], *, limit: int, offset: int, communities: Sequence[str] | None = None
) -> list[TokenListRow]:
    """Tokens (never their secrets), oldest first; those of some communities only, when given."""
    params = {"limit": limit, "offset": offset, "communities": _array(communities)}
    with conn.cursor(row_factory=class_row(TokenListRow)) as cur:
        return cur.execute(SELECT_TOKENS, params).fetchall()


def get_token(conn: Connection[Any], *, token_id: int, communities: Sequence[str] | None = None) -> TokenListRow | None:
    """One token's metadata (None if unknown, or outside the given communities)."""
    with conn.cursor(row_factory=class_row(TokenListRow)) as cur:
        return cur.execute(SELECT_TOKEN_BY_ID, {"id": token_id, "communities": _array(communities)}).fetchone()


def insert_token_communities(conn: Connection[Any], *, token_id: int, communities: Sequence[str]) -> None:
    """Limit an admin token to these communities."""
    with conn.cursor() as cur:
        cur.executemany(INSERT_TOKEN_COMMUNITY, [(token_id, c) for c in communities])


def get_token_communities(conn: Connection[Any], *, token_id: int) -> list[str]:
    """The communities an admin token is limited to (empty: every community)."""
    return [r[0] for r in conn.execute(SELECT_TOKEN_COMMUNITIES, (token_id,)).fetchall()]


def get_worker_role(conn: Connection[Any], *, worker_id: str) -> str | None:
    """A worker's registry role (micro_grid_worker, grid_leader, community_duty, fire_station)."""
    row = conn.execute(SELECT_WORKER_ROLE, (worker_id,)).fetchone()
    return None if row is None else str(row[0])


def _array(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


@dataclass(slots=True)
class SessionRow:
    session_id: int
    session_expires_at: datetime
    session_revoked_at: datetime | None
    token: TokenRow


INSERT_SESSION = "INSERT INTO web_session (session_hash, token_id, expires_at) VALUES (%s, %s, %s) RETURNING id"
SELECT_SESSION = """
SELECT s.id, s.expires_at, s.revoked_at, t.id, t.role, t.worker_id, t.merchant_id, t.label, t.expires_at,
       t.revoked_at, w.active
FROM web_session s JOIN api_token t ON t.id = s.token_id LEFT JOIN worker w ON w.id = t.worker_id
WHERE s.session_hash = %s
"""
REVOKE_SESSION = "UPDATE web_session SET revoked_at = now() WHERE session_hash = %s AND revoked_at IS NULL"


def insert_session(conn: Connection[Any], *, session_hash: bytes, token_id: int, expires_at: datetime) -> int:
    """Store a web session's digest; returns its id."""
    row = conn.execute(INSERT_SESSION, (session_hash, token_id, expires_at)).fetchone()
    assert row is not None  # noqa: S101
    return int(row[0] if isinstance(row, tuple) else row["id"])


def find_session(conn: Connection[Any], *, session_hash: bytes) -> SessionRow | None:
    """A web session with its token."""
    with conn.cursor() as cur:
        row = cur.execute(SELECT_SESSION, (session_hash,)).fetchone()
    if row is None:
        return None
    return SessionRow(row[0], row[1], row[2], TokenRow(*row[3:]))


def revoke_session(conn: Connection[Any], *, session_hash: bytes) -> None:
    """Log a session out."""
    conn.execute(REVOKE_SESSION, (session_hash,))


# What the live streams re-check, for every stream of a scope in one round trip: tokens still valid (not revoked,
# not expired, a worker's worker still active) and web sessions not ended.
SELECT_VALID_TOKENS = """
SELECT t.id FROM api_token t LEFT JOIN worker w ON w.id = t.worker_id
WHERE t.id = ANY(%(ids)s) AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
  AND (t.role <> 'worker' OR coalesce(w.active, false))
"""
SELECT_VALID_SESSIONS = """
SELECT id FROM web_session WHERE id = ANY(%(ids)s) AND revoked_at IS NULL AND expires_at > now()
"""


def list_valid_credentials(
    conn: Connection[Any], *, token_ids: list[int], session_ids: list[int]
) -> tuple[set[int], set[int]]:
    """(token ids, session ids) of those given that still admit their holder."""
    tokens = {r[0] for r in conn.execute(SELECT_VALID_TOKENS, {"ids": token_ids})} if token_ids else set()
    sessions = {r[0] for r in conn.execute(SELECT_VALID_SESSIONS, {"ids": session_ids})} if session_ids else set()
    return tokens, sessions


# -- alarms -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AlarmInSite(Alarm):
    """An alarm with where it is (what boards, pages and the stream show) and how far up its escalation ladder
    it has climbed (notify's escalation row: ladder_step None when it has no ladder)."""

    site_name: str = ""
    site_address: str = ""
    merchant_id: str | None = None
    ladder_step: int | None = None
    ladder_stopped_at: datetime | None = None
    escalated_at: datetime | None = None
    acknowledged_by_name: str | None = None  # issue 22: the person by name, not only their id


# The ladder columns read notify's escalation table and the alarm's latest `escalated` event (alarm_event_alarm
# index); an alarm without a ladder (info, silenced) has nulls.
ALARM_LIST_COLUMNS = (
    core_repo.alarm_columns("a")
    + """, s.name AS site_name, s.address AS site_address, s.merchant_id,
    e.step AS ladder_step, e.stopped_at AS ladder_stopped_at,
    (SELECT max(ev.at) FROM alarm_event ev WHERE ev.alarm_id = a.id AND ev.kind = 'escalated') AS escalated_at,
    (SELECT w.name FROM worker w WHERE w.id = a.acknowledged_by) AS acknowledged_by_name"""
)
ALARM_FROM = "alarm a JOIN site s ON s.id = a.site_id LEFT JOIN escalation e ON e.alarm_id = a.id"

# The micro-grids a worker sees follow the registry's hierarchy: those they cover; every micro-grid of the grids
# they lead (a grid leader, as core/routing.py's leader tier); the whole community for its duty office and fire
# station.
WORKER_MICRO_GRIDS = """
SELECT wm.micro_grid_id FROM worker_micro_grid wm WHERE wm.worker_id = %(worker)s
UNION ALL
SELECT mg.id FROM worker_grid wg JOIN worker w ON w.id = wg.worker_id AND w.role = 'grid_leader'
JOIN micro_grid mg ON mg.grid_id = wg.grid_id WHERE wg.worker_id = %(worker)s
UNION ALL
SELECT mg.id FROM worker w JOIN grid g ON g.community_id = w.community_id JOIN micro_grid mg ON mg.grid_id = g.id
WHERE w.id = %(worker)s AND w.role IN ('community_duty', 'fire_station')
"""
COMMUNITY_MICRO_GRIDS = """
SELECT mg.id FROM micro_grid mg JOIN grid g ON g.id = mg.grid_id WHERE g.community_id = ANY(%(communities)s)
"""
# What the caller may see of a site `s` (and of the alarms and devices in it).
SITE_SCOPE = f"""(%(worker)s::text IS NULL OR s.micro_grid_id IN ({WORKER_MICRO_GRIDS}))
  AND (%(merchant)s::text IS NULL OR s.merchant_id = %(merchant)s)
  AND (%(communities)s::text[] IS NULL OR s.micro_grid_id IN ({COMMUNITY_MICRO_GRIDS}))"""
# Alarms by their site's current micro-grid (alarm a JOIN site s), not a.micro_grid_id recorded at the raise:
# after a site moves, its open alarms are the new worker's to see and acknowledge (issue 23).
ALARM_SCOPE = SITE_SCOPE

SELECT_ALARMS = f"""
SELECT {ALARM_LIST_COLUMNS} FROM {ALARM_FROM}
WHERE {ALARM_SCOPE}
  AND (%(open_only)s = false OR a.closed_at IS NULL)
  AND (%(active)s::boolean IS NULL OR a.active = %(active)s)
  AND (%(acknowledged)s::boolean IS NULL OR a.acknowledged = %(acknowledged)s)
  AND (%(min_severity)s::int IS NULL OR a.severity >= %(min_severity)s)
  AND (%(site)s::text IS NULL OR a.site_id = %(site)s)
  AND (%(device)s::text IS NULL OR a.device_id = %(device)s)
  AND (%(type)s::text IS NULL OR a.type = %(type)s)
  AND (%(before_id)s::bigint IS NULL OR a.id < %(before_id)s)
ORDER BY a.id DESC LIMIT %(limit)s
"""
SELECT_ALARM_IN_SCOPE = f"""
SELECT {ALARM_LIST_COLUMNS} FROM {ALARM_FROM}
WHERE a.id = %(id)s AND {ALARM_SCOPE}
"""
# Changes for the live stream. updated_at is the writing transaction's start, so a transaction that
# commits late can carry an older stamp: callers re-read with an overlap and de-duplicate.
SELECT_ALARMS_CHANGED = f"""
SELECT {ALARM_LIST_COLUMNS} FROM {ALARM_FROM}
WHERE a.updated_at > %(since)s AND {ALARM_SCOPE}
ORDER BY a.updated_at, a.id LIMIT %(limit)s
"""
SELECT_NOW = "SELECT now()"


def list_alarms(
    conn: Connection[Any],
    *,
    worker_id: str | None,
    merchant_id: str | None,
    open_only: bool,
    active: bool | None,
    acknowledged: bool | None,
    min_severity: int | None,
    site_id: str | None,
    before_id: int | None,
    limit: int,
    device_id: str | None = None,
    alarm_type: str | None = None,
    communities: Sequence[str] | None = None,
) -> list[AlarmInSite]:
    """Alarms in the caller's scope, newest first, keyset-paginated by id."""
    with conn.cursor(row_factory=class_row(AlarmInSite)) as cur:
        return cur.execute(
            SELECT_ALARMS,
            {
                "worker": worker_id,
                "merchant": merchant_id,
                "communities": _array(communities),
                "open_only": open_only,
                "active": active,
                "acknowledged": acknowledged,
                "min_severity": min_severity,
                "site": site_id,
                "before_id": before_id,
                "limit": limit,
                "device": device_id,
                "type": alarm_type,
            },
        ).fetchall()


def get_alarm_in_scope(
    conn: Connection[Any],
    *,
    alarm_id: int,
    worker_id: str | None,
    merchant_id: str | None,
    communities: Sequence[str] | None = None,
) -> AlarmInSite | None:
    """One alarm if the caller may see it."""
    params = {"id": alarm_id, "worker": worker_id, "merchant": merchant_id, "communities": _array(communities)}
    with conn.cursor(row_factory=class_row(AlarmInSite)) as cur:
        return cur.execute(SELECT_ALARM_IN_SCOPE, params).fetchone()


def list_alarms_changed(
    conn: Connection[Any],
    *,
    since: datetime,
    worker_id: str | None,
    merchant_id: str | None,
    limit: int = 200,
    communities: Sequence[str] | None = None,
) -> list[AlarmInSite]:
    """Alarms in scope written after `since`, oldest change first."""
    params = {
        "since": since,
        "worker": worker_id,
        "merchant": merchant_id,
        "communities": _array(communities),
        "limit": limit,
    }
    with conn.cursor(row_factory=class_row(AlarmInSite)) as cur:
        return cur.execute(SELECT_ALARMS_CHANGED, params).fetchall()


def db_now(conn: Connection[Any]) -> datetime:
    """The database's clock (the one updated_at is stamped with)."""
    row = conn.execute(SELECT_NOW).fetchone()
    assert row is not None  # noqa: S101
    return row[0] if isinstance(row, tuple) else row["now"]  # type: ignore[no-any-return]


@dataclass(slots=True)
class AlarmEventRow:
    id: int
    at: datetime
    kind: str
    actor: str | None
    severity: int | None
    details: dict[str, Any]


SELECT_ALARM_EVENTS = "SELECT id, at, kind, actor, severity, details FROM alarm_event WHERE alarm_id = %s ORDER BY id"


def list_alarm_events(conn: Connection[Any], *, alarm_id: int) -> list[AlarmEventRow]:
    """An alarm's history, in order."""
    with conn.cursor(row_factory=class_row(AlarmEventRow)) as cur:
        return cur.execute(SELECT_ALARM_EVENTS, (alarm_id,)).fetchall()


READING_COLUMNS = MEASUREMENT_FIELDS + FLAG_FIELDS + STATE_FIELDS
SELECT_READINGS_RAW = f"""
SELECT ts, seq, {", ".join(READING_COLUMNS)} FROM reading
WHERE device_id = %s AND ts >= %s AND ts <= %s ORDER BY ts, seq LIMIT %s
"""


def list_readings_raw(
    conn: Connection[Any], *, device_id: str, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """A device's readings in a window (the ones around an alarm)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(SELECT_READINGS_RAW, (device_id, start, end, limit)).fetchall()


# -- devices and readings -------------------------------------------------------------------------------------


@dataclass(slots=True)
class DeviceRow:
    id: str
    kind: str
    site_id: str
    location: str
    adapter: str
    foreign_id: str | None
    battery: bool
    report_interval_s: int
    gateway_id: str | None
    model: str
    active: bool
    installed_at: datetime
    micro_grid_id: str
    merchant_id: str | None
    site_name: str
    online: bool | None
    last_seen_at: datetime | None
    offline: bool
    open_alarms: int


# Offline: the device said so (retained status / last will), or it has been silent for more than twice its
# expected report interval (RULES-REFERENCE section 5). A device never heard from is not counted as offline
# here (it shows last_seen_at null); KPIs count it separately.
DEVICE_OFFLINE = report_repo.DEVICE_OFFLINE  # one definition of offline, as the KPIs and reports count it
DEVICE_COLUMNS = f"""d.id, d.kind, d.site_id, d.location, d.adapter, d.foreign_id, d.battery, d.report_interval_s,
    d.gateway_id, d.model, d.active, d.installed_at, s.micro_grid_id, s.merchant_id, s.name AS site_name,
    st.online, st.last_seen_at, {DEVICE_OFFLINE} AS offline,
    (SELECT count(*) FROM alarm a WHERE a.device_id = d.id AND a.closed_at IS NULL)::int AS open_alarms"""
DEVICE_SCOPE = SITE_SCOPE
SELECT_DEVICES = f"""
SELECT {DEVICE_COLUMNS}
FROM device d JOIN site s ON s.id = d.site_id LEFT JOIN device_state st ON st.device_id = d.id
WHERE {DEVICE_SCOPE}
  AND (%(site)s::text IS NULL OR d.site_id = %(site)s)
  AND (%(kind)s::text IS NULL OR d.kind = %(kind)s)
  AND (%(offline)s::boolean IS NULL OR {DEVICE_OFFLINE} = %(offline)s)
ORDER BY d.id LIMIT %(limit)s OFFSET %(offset)s
"""
SELECT_DEVICE_IN_SCOPE = f"""
SELECT {DEVICE_COLUMNS}
FROM device d JOIN site s ON s.id = d.site_id LEFT JOIN device_state st ON st.device_id = d.id
WHERE d.id = %(id)s AND {DEVICE_SCOPE}
"""


def list_devices(
    conn: Connection[Any],
    *,
    worker_id: str | None,
    merchant_id: str | None,
    site_id: str | None,
    kind: str | None,
    offline: bool | None,
    limit: int,
    offset: int,
    communities: Sequence[str] | None = None,
) -> list[DeviceRow]:
    """Devices in scope with their live state."""
    with conn.cursor(row_factory=class_row(DeviceRow)) as cur:
        return cur.execute(
            SELECT_DEVICES,
            {
                "worker": worker_id,
                "merchant": merchant_id,
                "communities": _array(communities),
                "site": site_id,
                "kind": kind,
                "offline": offline,
                "limit": limit,
                "offset": offset,
            },
        ).fetchall()


def get_device_in_scope(
    conn: Connection[Any],
    *,
    device_id: str,
    worker_id: str | None,
    merchant_id: str | None,
    communities: Sequence[str] | None = None,
) -> DeviceRow | None:
    """One device if the caller may see it."""
    params = {"id": device_id, "worker": worker_id, "merchant": merchant_id, "communities": _array(communities)}
    with conn.cursor(row_factory=class_row(DeviceRow)) as cur:
        return cur.execute(SELECT_DEVICE_IN_SCOPE, params).fetchone()


@dataclass(slots=True)
class BucketRow:
    bucket: datetime
    n: int
    min: float | None
    max: float | None
    avg: float | None


# One statement, two bucketing functions: time_bucket on TimescaleDB (uses the hypertable's chunk
# exclusion), date_bin on plain PostgreSQL 14+. Both align to the same origin so results match.
SELECT_BUCKETS = """
SELECT {bucket_fn} AS bucket, count({field})::int AS n, min({field})::float8 AS min, max({field})::float8 AS max,
       avg({field})::float8 AS avg
FROM reading WHERE device_id = %(device)s AND ts >= %(start)s AND ts < %(end)s
GROUP BY 1 ORDER BY 1 LIMIT %(limit)s
"""
TIME_BUCKET = "time_bucket(%(width)s::interval, ts, timestamptz '2000-01-01')"
DATE_BIN = "date_bin(%(width)s::interval, ts, timestamptz '2000-01-01')"


def bucket_readings(
    conn: Connection[Any],
    *,
    device_id: str,
    field: str,
    start: datetime,
    end: datetime,
    width: timedelta,
    limit: int,
    timescale: bool,
) -> list[BucketRow]:
    """A device's readings of one numeric field, bucketed (min/max/avg per bucket)."""
    query = sql.SQL(SELECT_BUCKETS).format(
        bucket_fn=sql.SQL(TIME_BUCKET if timescale else DATE_BIN), field=sql.Identifier(field)
    )
    with conn.cursor(row_factory=class_row(BucketRow)) as cur:
        return cur.execute(
            query, {"device": device_id, "start": start, "end": end, "width": width, "limit": limit}
        ).fetchall()


# -- merchants in scope ---------------------------------------------------------------------------------------

SELECT_MERCHANT_IN_SCOPE = f"""
SELECT m.id, m.name FROM merchant m
WHERE m.id = %(id)s
  AND (%(merchant)s::text IS NULL OR m.id = %(merchant)s)
  AND (%(worker)s::text IS NULL OR EXISTS (
        SELECT 1 FROM site s WHERE s.merchant_id = m.id AND s.micro_grid_id IN ({WORKER_MICRO_GRIDS})))
  AND (%(communities)s::text[] IS NULL OR m.community_id = ANY(%(communities)s))
"""


def get_merchant_in_scope(
    conn: Connection[Any],
    *,
    merchant_id: str,
    worker_id: str | None,
    own_merchant_id: str | None,
    communities: Sequence[str] | None = None,
) -> tuple[str, str] | None:
    """(id, name) of a merchant the caller may see: a merchant only itself, a worker those with a site in
    the micro-grids they see, an admin limited to some communities the merchants of those."""
    row = conn.execute(
        SELECT_MERCHANT_IN_SCOPE,
        {"id": merchant_id, "merchant": own_merchant_id, "worker": worker_id, "communities": _array(communities)},
    ).fetchone()
    if row is None:
        return None
    return (row[0], row[1]) if isinstance(row, tuple) else (row["id"], row["name"])


SELECT_SITE_IN_SCOPE = f"""
SELECT 1 FROM site s WHERE s.id = %(id)s AND {SITE_SCOPE}
"""
SELECT_FINDING_SITE = "SELECT site_id FROM score_finding WHERE id = %s"


def site_in_scope(
    conn: Connection[Any],
    *,
    site_id: str,
    worker_id: str | None,
    merchant_id: str | None,
    communities: Sequence[str] | None = None,
) -> bool:
    """Whether the caller may see (and, as a worker, inspect) this site."""
    params = {"id": site_id, "worker": worker_id, "merchant": merchant_id, "communities": _array(communities)}
    return conn.execute(SELECT_SITE_IN_SCOPE, params).fetchone() is not None


def get_finding_site(conn: Connection[Any], *, finding_id: int) -> str | None:
    """The site an inspection finding was recorded on."""
    row = conn.execute(SELECT_FINDING_SITE, (finding_id,)).fetchone()
    return None if row is None else (row[0] if isinstance(row, tuple) else row["site_id"])


SELECT_ONE = "SELECT 1"
LISTEN_OUTBOX = f"LISTEN {OUTBOX_CHANNEL}"


def ping(conn: Connection[Any]) -> None:
    """Round trip to the database (health check)."""
    conn.execute(SELECT_ONE)


async def listen_outbox(conn: AsyncConnection[Any]) -> None:
    """Subscribe an autocommit connection to alarm changes (rules NOTIFY with every outbox row)."""
    await conn.execute(LISTEN_OUTBOX)


# -- signed alarm links (core/actionlink.py) -------------------------------------------------------------------


@dataclass(slots=True)
class LinkRecipient:
    """Whether a link's recipient may still use their links."""

    active: bool
    not_before: datetime | None


SELECT_LINK_RECIPIENT = """
SELECT r.active, v.not_before FROM (
    SELECT w.active FROM worker w WHERE %(kind)s = 'worker' AND w.id = %(id)s
    UNION ALL
    SELECT true FROM merchant m WHERE %(kind)s = 'merchant' AND m.id = %(id)s
) r LEFT JOIN alarm_link_revocation v ON v.recipient_kind = %(kind)s AND v.recipient_id = %(id)s
"""
# Revocation only ever moves forward: a later revocation never revives links an earlier one refused.
REVOKE_LINKS = """
INSERT INTO alarm_link_revocation (recipient_kind, recipient_id, not_before, revoked_by)
VALUES (%(kind)s, %(id)s, %(at)s, %(by)s)
ON CONFLICT (recipient_kind, recipient_id) DO UPDATE
SET not_before = greatest(alarm_link_revocation.not_before, EXCLUDED.not_before), revoked_by = EXCLUDED.revoked_by
RETURNING not_before
"""


def get_link_recipient(conn: Connection[Any], *, kind: str, recipient_id: str) -> LinkRecipient | None:
    """A link recipient's standing (None: not in the registry)."""
    with conn.cursor(row_factory=class_row(LinkRecipient)) as cur:
        return cur.execute(SELECT_LINK_RECIPIENT, {"kind": kind, "id": recipient_id}).fetchone()


def revoke_links(conn: Connection[Any], *, kind: str, recipient_id: str, at: datetime, by: str) -> datetime:
    """Refuse every link of this recipient issued before `at`; returns the instant in force."""
    row = conn.execute(REVOKE_LINKS, {"kind": kind, "id": recipient_id, "at": at, "by": by}).fetchone()
    assert row is not None  # noqa: S101 - RETURNING always yields the row
    return row[0]  # type: ignore[no-any-return]
