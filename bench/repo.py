"""SQL of the benchmark: a generated district (registry, readings, alarm history) and measurements.

Everything here writes GENERATED data with generate_series, straight into the database: it is shaped
like a real district (devices per micro-grid, report intervals, alarm history) but no device sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb

# Device d sits in site d / 2; site s in micro-grid s % micro_grids; worker w covers micro-grids 2w, 2w+1;
# every fifth site is a merchant's shop. Kind by d % 10 (4 gas, 3 smoke, 1 CO, 2 sockets in a charging shed).
KIND_OF = """CASE WHEN d %% 10 < 4 THEN 'gas_detector' WHEN d %% 10 < 7 THEN 'smoke_detector'
                  WHEN d %% 10 = 7 THEN 'co_alarm' ELSE 'smart_socket' END"""
LOCATION_OF = """CASE WHEN d %% 10 < 4 THEN 'kitchen' WHEN d %% 10 < 7 THEN 'corridor'
                      WHEN d %% 10 = 7 THEN 'room' ELSE 'charging_shed' END"""

GENERATE_REGISTRY = [
    "INSERT INTO community (id, name) VALUES ('bench', 'Generated bench district')",
    """INSERT INTO grid (id, community_id, name)
       SELECT 'g' || lpad(g::text, 4, '0'), 'bench', 'Grid ' || g FROM generate_series(0, %(grids)s - 1) g""",
    """INSERT INTO micro_grid (id, grid_id, name)
       SELECT 'mg' || lpad(m::text, 5, '0'), 'g' || lpad((m %% %(grids)s)::text, 4, '0'), 'Micro-grid ' || m
       FROM generate_series(0, %(micro_grids)s - 1) m""",
    """INSERT INTO worker (id, community_id, name, role, locale, notify_urls)
       SELECT 'w' || lpad(w::text, 5, '0'), 'bench', 'Worker ' || w, 'micro_grid_worker', 'en',
              ARRAY[%(notify_base)s || '/w' || lpad(w::text, 5, '0')]
       FROM generate_series(0, (%(micro_grids)s + 1) / 2 - 1) w""",
    """INSERT INTO worker_micro_grid (worker_id, micro_grid_id)
       SELECT 'w' || lpad((m / 2)::text, 5, '0'), 'mg' || lpad(m::text, 5, '0')
       FROM generate_series(0, %(micro_grids)s - 1) m""",
    """INSERT INTO merchant (id, community_id, name)
       SELECT 'm' || lpad(s::text, 6, '0'), 'bench', 'Shop ' || s
       FROM generate_series(0, (%(devices)s + 1) / 2 - 1, 5) s""",
    """INSERT INTO site (id, micro_grid_id, merchant_id, kind, name, address, floor)
       SELECT 's' || lpad(s::text, 6, '0'), 'mg' || lpad((s %% %(micro_grids)s)::text, 5, '0'),
              CASE WHEN s %% 5 = 0 THEN 'm' || lpad(s::text, 6, '0') END,
              CASE WHEN s %% 5 = 0 THEN 'shop' ELSE 'building' END, 'Site ' || s, s || ' Bench Lane',
              1 + s %% 6
       FROM generate_series(0, (%(devices)s + 1) / 2 - 1) s""",
    f"""INSERT INTO device (id, kind, site_id, location, report_interval_s, battery)
       SELECT 'd' || lpad(d::text, 6, '0'), {KIND_OF}, 's' || lpad((d / 2)::text, 6, '0'), {LOCATION_OF},
              CASE WHEN d %% 10 >= 8 THEN 60 ELSE 300 END, d %% 10 BETWEEN 4 AND 7
       FROM generate_series(0, %(devices)s - 1) d""",
    "INSERT INTO device_state (device_id) SELECT id FROM device",
]


def device_id(d: int) -> str:
    """The generated id of device number d."""
    return f"d{d:06d}"


def device_kind(d: int) -> str:
    """The generated kind of device number d (same rule as KIND_OF)."""
    r = d % 10
    return "gas_detector" if r < 4 else "smoke_detector" if r < 7 else "co_alarm" if r == 7 else "smart_socket"


def micro_grid_of(d: int, micro_grids: int) -> str:
    """The micro-grid of device number d."""
    return f"mg{(d // 2) % micro_grids:05d}"


def worker_of(d: int, micro_grids: int) -> str:
    """The worker covering device number d."""
    return f"w{((d // 2) % micro_grids) // 2:05d}"


def merchant_device(merchant: int) -> int:
    """A device on merchant number `merchant`'s premises (site = merchant number)."""
    return merchant * 2


def generate_registry(conn: Connection[Any], *, devices: int, micro_grids: int, grids: int, notify_base: str) -> None:
    """A district of `devices` devices, one registry row set, generated."""
    params = {"devices": devices, "micro_grids": micro_grids, "grids": grids, "notify_base": notify_base}
    with conn.cursor() as cur:
        for sql in GENERATE_REGISTRY:
            cur.execute(sql, params)  # type: ignore[arg-type]


# Readings: device g % devices, one every `interval_s` going back from now; values of the device's kind.
DROP_READING_PK = "ALTER TABLE reading DROP CONSTRAINT reading_pkey"
ADD_READING_PK = "ALTER TABLE reading ADD PRIMARY KEY (device_id, ts, seq)"
GENERATE_READINGS = """
INSERT INTO reading (device_id, ts, seq, received_at, gas_lel, co_ppm, smoke, smoke_db_m, battery_pct,
                     power_w, current_a, voltage_v, temp_c, relay)
SELECT 'd' || lpad(dev::text, 6, '0'), t, n, t + interval '40 ms',
       CASE WHEN k < 4 THEN (n %% 7)::real END,
       CASE WHEN k = 7 THEN (n %% 5)::real END,
       CASE WHEN k BETWEEN 4 AND 6 THEN false END,
       CASE WHEN k BETWEEN 4 AND 6 THEN 0.01::real END,
       CASE WHEN k BETWEEN 4 AND 7 THEN (100 - n %% 50)::real END,
       CASE WHEN k >= 8 THEN ((n * 37) %% 300)::real END,
       CASE WHEN k >= 8 THEN ((n * 37) %% 300 / 220.0)::real END,
       CASE WHEN k >= 8 THEN 220::real END,
       CASE WHEN k >= 8 THEN (25 + n %% 10)::real END,
       CASE WHEN k >= 8 THEN 'on' END
FROM (SELECT g %% %(devices)s AS dev, (g %% %(devices)s) %% 10 AS k, g / %(devices)s AS n,
             %(now)s - (g / %(devices)s) * make_interval(secs => %(interval_s)s) AS t
      FROM generate_series(%(start)s, %(stop)s - 1) g) x
"""


def generate_readings(
    conn: Connection[Any], *, devices: int, readings: int, now: datetime, interval_s: float, start: int = 0
) -> None:
    """`readings` generated rows spread evenly over the devices, newest at `now`."""
    conn.execute(
        GENERATE_READINGS,
        {"devices": devices, "now": now, "interval_s": interval_s, "start": start, "stop": start + readings},
    )


# Alarm history: mostly closed alarms, a few open ones on each micro-grid's board.
GENERATE_ALARMS = """
INSERT INTO alarm (device_id, site_id, micro_grid_id, type, rule_id, severity, active, acknowledged,
                   raised_at, last_seen_at, cleared_at, closed_at, closed_by, disposition, value, peak_value,
                   message)
SELECT 'd' || lpad(dev::text, 6, '0'), 's' || lpad((dev / 2)::text, 6, '0'),
       'mg' || lpad(((dev / 2) %% %(micro_grids)s)::text, 5, '0'),
       'bench_' || a, 'GAS-02', 1 + a %% 4, a >= %(closed)s, false,
       t, t,
       CASE WHEN a < %(closed)s THEN t + interval '5 minutes' END,
       CASE WHEN a < %(closed)s THEN t + interval '30 minutes' END,
       CASE WHEN a < %(closed)s THEN 'w00000' END,
       CASE WHEN a < %(closed)s THEN 'false_alarm' END, 30, 30, 'generated history'
FROM (SELECT a, (a * 7919) %% %(devices)s AS dev, %(now)s - (%(alarms)s - a) * interval '1 minute' AS t
      FROM generate_series(0, %(alarms)s - 1) a) x
"""


def generate_alarms(
    conn: Connection[Any], *, devices: int, micro_grids: int, alarms: int, open_alarms: int, now: datetime
) -> None:
    """`alarms` generated alarms of which the newest `open_alarms` are still open."""
    conn.execute(
        GENERATE_ALARMS,
        {
            "devices": devices,
            "micro_grids": micro_grids,
            "alarms": alarms,
            "closed": alarms - open_alarms,
            "now": now,
        },
    )


COUNT_READINGS = "SELECT count(*) FROM reading"
# Needs track_commit_timestamp = on: the commit time of the newest committed reading.
DRAIN_SPAN = """
SELECT count(*), min(received_at), max(pg_xact_commit_timestamp(xmin)) FROM reading
"""
COUNT_STATES_AT = "SELECT count(*) FROM device_state WHERE last_seq = %s"
STATE_SPAN = """
SELECT count(*), min(last_seen_at), max(pg_xact_commit_timestamp(xmin)) FROM device_state WHERE last_seq = %s
"""
READING_MARKS = """
SELECT device_id, received_at, pg_xact_commit_timestamp(xmin) FROM reading
WHERE device_id = ANY(%s) AND seq = %s
"""
COUNT_OPEN_ALARMS = """
SELECT count(*) AS open, count(DISTINCT (device_id, type)) AS distinct_open FROM alarm WHERE closed_at IS NULL
"""


def count_readings(conn: Connection[Any]) -> int:
    """Rows in reading."""
    row = conn.execute(COUNT_READINGS).fetchone()
    return int(row[0]) if row else 0


@dataclass(slots=True, frozen=True)
class DrainSpan:
    rows: int
    first_received_at: datetime | None
    last_commit_at: datetime | None


def drain_span(conn: Connection[Any]) -> DrainSpan:
    """How many readings, when the first was received and when the last was committed."""
    row = conn.execute(DRAIN_SPAN).fetchone()
    assert row is not None
    return DrainSpan(int(row[0]), row[1], row[2])


def count_states_at(conn: Connection[Any], *, seq: int) -> int:
    """Devices whose newest evaluated reading has this sequence number."""
    row = conn.execute(COUNT_STATES_AT, (seq,)).fetchone()
    return int(row[0]) if row else 0


def state_span(conn: Connection[Any], *, seq: int) -> DrainSpan:
    """Like drain_span, from the rule state the readings with this sequence number left behind."""
    row = conn.execute(STATE_SPAN, (seq,)).fetchone()
    assert row is not None
    return DrainSpan(int(row[0]), row[1], row[2])


def reading_marks(
    conn: Connection[Any], *, device_ids: list[str], seq: int
) -> dict[str, tuple[datetime | None, datetime | None]]:
    """For each device's reading with this sequence number: when ingest received it and when it committed."""
    rows = conn.execute(READING_MARKS, (device_ids, seq)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def count_open_alarms(conn: Connection[Any]) -> tuple[int, int]:
    """Open alarms, and distinct (device, type) among them (equal when nothing is duplicated)."""
    row = conn.execute(COUNT_OPEN_ALARMS).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


COPY_ROWS = """COPY reading (device_id, ts, seq, received_at, gas_lel, co_ppm, smoke, smoke_db_m, battery_pct,
    power_w, current_a, voltage_v, temp_c, relay, extras) FROM STDIN (FORMAT BINARY)"""
COPY_TYPES = (
    "text",
    "timestamptz",
    "int8",
    "timestamptz",
    "float4",
    "float4",
    "bool",
    "float4",
    "float4",
    "float4",
    "float4",
    "float4",
    "float4",
    "text",
    "jsonb",
)


def copy_rows(conn: Connection[Any], *, rows: list[tuple[Any, ...]]) -> None:
    """The raw limit: binary COPY of prepared rows, nothing else."""
    with conn.cursor() as cur, cur.copy(COPY_ROWS) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            copy.write_row(row)


def jsonb_or_none(value: dict[str, Any] | None) -> Jsonb | None:
    """Extras as COPY wants them."""
    return Jsonb(value) if value else None


COUNT_TRANSITIONS = """
SELECT (SELECT count(*) FROM alarm_event WHERE kind IN ('raised', 'cleared', 'reactivated', 'severity_raised')),
       (SELECT count(*) FROM outbox)
"""


def count_transitions(conn: Connection[Any]) -> tuple[int, int]:
    """(alarm transitions written, outbox rows queued for notify) in a drained database."""
    row = conn.execute(COUNT_TRANSITIONS).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


TOP_STATEMENTS = """
SELECT regexp_replace(left(query, 90), '\\s+', ' ', 'g'), calls, total_exec_time
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)
ORDER BY total_exec_time DESC LIMIT %s
"""


# Where a probe's gas leak spent its time, from the database's own clocks: its alarm's row is written in the ingest
# batch that raised it (created_at: that batch's start), its outbox row routed in a notify transaction (routed_at:
# that transaction's start).
PROBE_STAGES = """
SELECT a.device_id, extract(epoch FROM min(a.created_at)), extract(epoch FROM min(o.routed_at))
FROM alarm a JOIN outbox o ON o.alarm_id = a.id AND o.kind = 'raised'
WHERE a.device_id = ANY(%s) AND a.type = 'gas_leak'
GROUP BY a.device_id
"""


def probe_stages(conn: Connection[Any], *, device_ids: list[str]) -> dict[str, tuple[float, float | None]]:
    """Per probed device: epoch seconds its gas_leak alarm's ingest batch started and its routing started."""
    return {
        str(d): (float(batch), None if routed is None else float(routed))
        for d, batch, routed in conn.execute(PROBE_STAGES, (device_ids,)).fetchall()
    }


def reset_statements(conn: Connection[Any]) -> None:
    """Forget the statement profile so far (pg_stat_statements)."""
    conn.execute("SELECT pg_stat_statements_reset()")


def top_statements(conn: Connection[Any], *, database: str, per: int, limit: int = 8) -> list[dict[str, Any]]:
    """The statements that took the server's time in one database, as µs of execution per reading."""
    rows = conn.execute(TOP_STATEMENTS, (database, limit)).fetchall()
    return [{"statement": q, "calls": int(c), "us_per_reading": round(t * 1000 / per, 1)} for q, c, t in rows]
