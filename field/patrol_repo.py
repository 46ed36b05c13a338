"""SQL of patrol rounds: rounds, their stops, check-ins and coverage. Nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from core.repo import PATROL_COVERAGE_COUNTS
from field.repo import WORKER_MICRO_GRIDS, PhotoData, Scope


@dataclass(slots=True)
class RoundRow:
    id: int
    kind: str
    micro_grid_id: str
    title: str
    due_start: datetime
    due_end: datetime
    created_by: str
    created_at: datetime
    schedule_key: str | None
    stops: int = 0
    visited: int = 0


@dataclass(slots=True)
class StopRow:
    id: int
    round_id: int
    seq: int
    site_id: str
    household: str
    checklist: str
    visited_at: datetime | None
    visited_by: str | None
    outcome: str | None
    answers: dict[str, str]
    note: str
    site_name: str = ""


@dataclass(slots=True)
class MissedRow:
    round_id: int
    title: str
    due_end: datetime
    stop_id: int
    site_id: str
    household: str
    site_name: str


# A round is in scope by its micro-grid (merchants have no rounds).
ROUND_SCOPE = f"""(%(worker)s::text IS NULL OR r.micro_grid_id IN ({WORKER_MICRO_GRIDS}))
  AND %(merchant)s::text IS NULL
  AND (%(communities)s::text[] IS NULL OR r.micro_grid_id IN (
      SELECT mg.id FROM micro_grid mg JOIN grid g ON g.id = mg.grid_id WHERE g.community_id = ANY(%(communities)s)))"""
ROUND_COLUMNS = """r.id, r.kind, r.micro_grid_id, r.title, r.due_start, r.due_end, r.created_by, r.created_at,
r.schedule_key,
(SELECT count(*) FROM patrol_stop p WHERE p.round_id = r.id)::int AS stops,
(SELECT count(*) FROM patrol_stop p WHERE p.round_id = r.id AND p.visited_at IS NOT NULL)::int AS visited"""

INSERT_ROUND = """
INSERT INTO patrol_round (kind, micro_grid_id, title, due_start, due_end, created_by, schedule_key)
VALUES (%(kind)s, %(mg)s, %(title)s, %(start)s, %(end)s, %(by)s, %(key)s)
ON CONFLICT (schedule_key) DO NOTHING
RETURNING id
"""
INSERT_STOP = """
INSERT INTO patrol_stop (round_id, seq, site_id, household, checklist)
VALUES (%(round)s, %(seq)s, %(site)s, %(household)s, %(checklist)s)
"""


def insert_round(
    conn: Connection[Any],
    *,
    kind: str,
    micro_grid_id: str,
    title: str,
    due_start: datetime,
    due_end: datetime,
    created_by: str,
    schedule_key: str | None = None,
) -> int | None:
    """A new round (None: a scheduled round with this key exists already)."""
    params = {
        "kind": kind,
        "mg": micro_grid_id,
        "title": title,
        "start": due_start,
        "end": due_end,
        "by": created_by,
        "key": schedule_key,
    }
    row = conn.execute(INSERT_ROUND, params).fetchone()
    return None if row is None else int(row[0])


def insert_stops(conn: Connection[Any], *, round_id: int, stops: Sequence[tuple[str, str, str]]) -> None:
    """The round's stops in order: (site, household, check-list)."""
    with conn.cursor() as cur:
        cur.executemany(
            INSERT_STOP,
            [
                {"round": round_id, "seq": i, "site": site, "household": household, "checklist": checklist}
                for i, (site, household, checklist) in enumerate(stops, start=1)
            ],
        )


SELECT_MICRO_GRIDS_WITH_SITES = """
SELECT DISTINCT s.micro_grid_id
FROM site s JOIN micro_grid mg ON mg.id = s.micro_grid_id JOIN grid g ON g.id = mg.grid_id
WHERE %(communities)s::text[] IS NULL OR g.community_id = ANY(%(communities)s) ORDER BY 1
"""


def micro_grids_with_sites(conn: Connection[Any], *, communities: Sequence[str] | None = None) -> list[str]:
    """Micro-grids that have something to walk (of these communities)."""
    params = {"communities": None if communities is None else list(communities)}
    return [str(r[0]) for r in conn.execute(SELECT_MICRO_GRIDS_WITH_SITES, params).fetchall()]


# 一日双巡 for a whole street in one statement: a round per micro-grid with sites and slot (none where its schedule
# key exists already), each with a stop per site of its micro-grid in site order. Row by row, a district of 50,000
# sites took seconds of the database at the start of each day, beside the ingest (issue 18).
SCHEDULE_DAILY_ROUNDS = """
WITH mg AS (
    SELECT DISTINCT s.micro_grid_id AS id
    FROM site s JOIN micro_grid m ON m.id = s.micro_grid_id JOIN grid g ON g.id = m.grid_id
    WHERE %(communities)s::text[] IS NULL OR g.community_id = ANY(%(communities)s)
), slot AS (
    SELECT * FROM jsonb_to_recordset(%(slots)s::jsonb) AS x(slot text, due_start timestamptz, due_end timestamptz)
), made AS (
    INSERT INTO patrol_round (kind, micro_grid_id, title, due_start, due_end, created_by, schedule_key)
    SELECT 'grid', mg.id, '一日双巡 / Twice-daily round ' || mg.id || ' ' || %(day)s::text || ' ' || slot.slot,
           slot.due_start, slot.due_end, %(by)s, 'grid:' || mg.id || ':' || %(day)s::text || ':' || slot.slot
    FROM mg CROSS JOIN slot ORDER BY mg.id, slot.slot
    ON CONFLICT (schedule_key) DO NOTHING
    RETURNING id, micro_grid_id
), stops AS (
    INSERT INTO patrol_stop (round_id, seq, site_id, household, checklist)
    SELECT made.id, row_number() OVER (PARTITION BY made.id ORDER BY s.id), s.id, '',
           coalesce(%(checklists)s::jsonb ->> s.kind, %(default)s)
    FROM made JOIN site s ON s.micro_grid_id = made.micro_grid_id
)
SELECT count(*) FROM made
"""


def schedule_daily_rounds(
    conn: Connection[Any],
    *,
    day: str,
    slots: Sequence[dict[str, str]],
    checklists: dict[str, str],
    default_checklist: str,
    actor: str,
    communities: Sequence[str] | None = None,
) -> int:
    """The day's rounds of every micro-grid with sites (of these communities) and their stops; returns how many
    rounds were new. `slots`: {slot, due_start, due_end}; `checklists`: site kind -> check-list."""
    params = {
        "communities": None if communities is None else list(communities),
        "slots": Jsonb(list(slots)),
        "day": day,
        "by": actor,
        "checklists": Jsonb(checklists),
        "default": default_checklist,
    }
    row = conn.execute(SCHEDULE_DAILY_ROUNDS, params).fetchone()
    return int(row[0]) if row else 0


SELECT_ROUND = f"SELECT {ROUND_COLUMNS} FROM patrol_round r WHERE r.id = %(id)s AND {ROUND_SCOPE}"
SELECT_ROUNDS = f"""
SELECT {ROUND_COLUMNS} FROM patrol_round r
WHERE {ROUND_SCOPE} AND r.due_end > %(since)s AND r.due_start < %(until)s
ORDER BY r.due_start, r.id LIMIT %(limit)s
"""


def get_round(conn: Connection[Any], *, round_id: int, scope: Scope) -> RoundRow | None:
    """One round if its micro-grid is in scope."""
    with conn.cursor(row_factory=class_row(RoundRow)) as cur:
        return cur.execute(SELECT_ROUND, {"id": round_id, **scope.params()}).fetchone()


def list_rounds(
    conn: Connection[Any], *, scope: Scope, since: datetime, until: datetime, limit: int = 200
) -> list[RoundRow]:
    """Rounds in scope overlapping [since, until), earliest first."""
    params = {"since": since, "until": until, "limit": limit, **scope.params()}
    with conn.cursor(row_factory=class_row(RoundRow)) as cur:
        return cur.execute(SELECT_ROUNDS, params).fetchall()


SELECT_STOPS = """
SELECT p.id, p.round_id, p.seq, p.site_id, p.household, p.checklist, p.visited_at, p.visited_by, p.outcome,
       p.answers, p.note, s.name AS site_name
FROM patrol_stop p JOIN site s ON s.id = p.site_id WHERE p.round_id = %s ORDER BY p.seq
"""
LOCK_STOP = """
SELECT p.id, p.round_id, p.seq, p.site_id, p.household, p.checklist, p.visited_at, p.visited_by, p.outcome,
       p.answers, p.note, s.name AS site_name
FROM patrol_stop p JOIN site s ON s.id = p.site_id WHERE p.id = %s AND p.round_id = %s FOR UPDATE OF p
"""
UPDATE_CHECK_IN = """
UPDATE patrol_stop SET visited_at = %(at)s, visited_by = %(by)s, outcome = %(outcome)s, answers = %(answers)s,
       note = %(note)s
WHERE id = %(id)s
"""


def list_stops(conn: Connection[Any], *, round_id: int) -> list[StopRow]:
    """A round's stops in route order."""
    with conn.cursor(row_factory=class_row(StopRow)) as cur:
        return cur.execute(SELECT_STOPS, (round_id,)).fetchall()


def lock_stop(conn: Connection[Any], *, round_id: int, stop_id: int) -> StopRow | None:
    """One stop of a round, locked for its check-in."""
    with conn.cursor(row_factory=class_row(StopRow)) as cur:
        return cur.execute(LOCK_STOP, (stop_id, round_id)).fetchone()


def check_in(
    conn: Connection[Any], *, stop_id: int, at: datetime, by: str, outcome: str, answers: dict[str, str], note: str
) -> None:
    """Record the visit and the check-list's answers."""
    params = {"id": stop_id, "at": at, "by": by, "outcome": outcome, "answers": Jsonb(answers), "note": note}
    conn.execute(UPDATE_CHECK_IN, params)


# -- coverage ----------------------------------------------------------------------------------------------------

SELECT_COVERAGE = f"""{PATROL_COVERAGE_COUNTS}
WHERE {ROUND_SCOPE} AND r.due_start >= %(since)s AND r.due_start < %(until)s
  AND (%(mg)s::text IS NULL OR r.micro_grid_id = %(mg)s)
GROUP BY r.kind ORDER BY r.kind
"""
SELECT_MISSED = f"""
SELECT r.id AS round_id, r.title, r.due_end, p.id AS stop_id, p.site_id, p.household, s.name AS site_name
FROM patrol_round r JOIN patrol_stop p ON p.round_id = r.id JOIN site s ON s.id = p.site_id
WHERE {ROUND_SCOPE} AND r.due_start >= %(since)s AND r.due_start < %(until)s
  AND (%(mg)s::text IS NULL OR r.micro_grid_id = %(mg)s)
  AND p.visited_at IS NULL AND r.due_end <= %(now)s
ORDER BY r.due_end, p.seq LIMIT %(limit)s
"""


def coverage(
    conn: Connection[Any], *, scope: Scope, since: datetime, until: datetime, now: datetime, micro_grid_id: str | None
) -> list[tuple[str, int, int, int, int, int]]:
    """Per kind of round: stops due, visited, checked, nobody home, missed (unvisited after the round's end)."""
    params = {"since": since, "until": until, "now": now, "mg": micro_grid_id, **scope.params()}
    return [tuple(r) for r in conn.execute(SELECT_COVERAGE, params).fetchall()]


def missed_stops(
    conn: Connection[Any],
    *,
    scope: Scope,
    since: datetime,
    until: datetime,
    now: datetime,
    micro_grid_id: str | None,
    limit: int = 500,
) -> list[MissedRow]:
    """The stops no one visited before their round ended."""
    params = {"since": since, "until": until, "now": now, "mg": micro_grid_id, "limit": limit, **scope.params()}
    with conn.cursor(row_factory=class_row(MissedRow)) as cur:
        return cur.execute(SELECT_MISSED, params).fetchall()


INSERT_STOP_PHOTO = """
INSERT INTO field_photo (id, patrol_stop_id, content_type, size, width, height, sha256, data, stage, uploaded_by,
                         uploaded_at)
VALUES (%(id)s, %(stop)s, %(content_type)s, %(size)s, %(width)s, %(height)s, %(sha256)s, %(data)s, 'checkin', %(by)s,
        %(at)s)
"""
SELECT_STOP_PHOTOS = """
SELECT p.patrol_stop_id, p.id FROM field_photo p JOIN patrol_stop s ON s.id = p.patrol_stop_id
WHERE s.round_id = %s ORDER BY p.uploaded_at, p.id
"""
COUNT_STOP_PHOTOS = "SELECT count(*) FROM field_photo WHERE patrol_stop_id = %s"
SELECT_STOP_PHOTO = f"""
SELECT p.id, p.content_type, p.data, st.site_id
FROM field_photo p JOIN patrol_stop st ON st.id = p.patrol_stop_id JOIN patrol_round r ON r.id = st.round_id
WHERE p.id = %(photo)s AND r.id = %(round)s AND {ROUND_SCOPE}
"""


def insert_stop_photo(conn: Connection[Any], **values: Any) -> None:
    """A checked photo taken at a stop's check-in."""
    conn.execute(INSERT_STOP_PHOTO, values)


def count_stop_photos(conn: Connection[Any], *, stop_id: int) -> int:
    """How many photos a stop has."""
    row = conn.execute(COUNT_STOP_PHOTOS, (stop_id,)).fetchone()
    return int(row[0]) if row else 0


def stop_photo_ids(conn: Connection[Any], *, round_id: int) -> dict[int, list[str]]:
    """The photos of a round's stops, by stop."""
    found: dict[int, list[str]] = {}
    for stop_id, photo_id in conn.execute(SELECT_STOP_PHOTOS, (round_id,)).fetchall():
        found.setdefault(int(stop_id), []).append(str(photo_id))
    return found


def get_stop_photo(conn: Connection[Any], *, round_id: int, photo_id: str, scope: Scope) -> PhotoData | None:
    """A check-in photo's bytes if the round is in scope."""
    with conn.cursor(row_factory=class_row(PhotoData)) as cur:
        return cur.execute(SELECT_STOP_PHOTO, {"photo": photo_id, "round": round_id, **scope.params()}).fetchone()
