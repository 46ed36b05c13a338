"""SQL of the map (issue 22): the caller's sites with where they are and their live state, one building's devices
floor by floor (with the work orders still open on it: issue 21's table, read as the board reads alarms), and its
floor plans (table floor_plan, written only here). Scoped like every other read
(api/repo.py SITE_SCOPE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from api.repo import COMMUNITY_MICRO_GRIDS, DEVICE_OFFLINE, SITE_SCOPE

# A building on the map: the sites that name it as their building, or a site on its own.
BUILDING = "coalesce(s.building, s.id)"
MAP_SITES = f"""
SELECT s.id, s.name, s.kind, s.floor, {BUILDING} AS building, s.lat, s.lon,
       s.micro_grid_id, mg.name AS micro_grid_name, g.id AS grid_id, g.name AS grid_name,
       (SELECT max(a.severity) FROM alarm a WHERE a.site_id = s.id AND a.closed_at IS NULL) AS worst,
       (SELECT count(*) FROM alarm a WHERE a.site_id = s.id AND a.closed_at IS NULL)::int AS open_alarms,
       (SELECT count(*) FROM work_order w WHERE w.site_id = s.id AND w.status <> 'closed')::int AS open_work_orders,
       (SELECT count(*) FROM device d WHERE d.site_id = s.id AND d.active)::int AS devices,
       (SELECT count(*) FROM device d LEFT JOIN device_state st ON st.device_id = d.id
        WHERE d.site_id = s.id AND d.active AND {DEVICE_OFFLINE})::int AS offline
FROM site s JOIN micro_grid mg ON mg.id = s.micro_grid_id JOIN grid g ON g.id = mg.grid_id
WHERE {SITE_SCOPE}
ORDER BY g.id, mg.id, {BUILDING}, s.floor NULLS FIRST, s.id
LIMIT 5000
"""
BUILDING_DEVICES = f"""
SELECT s.id AS site_id, s.name AS site_name, s.kind AS site_kind, s.floor, d.id AS device_id, d.kind AS device_kind,
       d.location, coalesce({DEVICE_OFFLINE}, false) AS offline,
       (d.id IS NOT NULL AND st.last_seen_at IS NULL AND st.online IS NULL) AS never_seen,
       (SELECT max(a.severity) FROM alarm a WHERE a.device_id = d.id AND a.closed_at IS NULL) AS worst,
       ARRAY(SELECT a.type FROM alarm a WHERE a.device_id = d.id AND a.closed_at IS NULL
             ORDER BY a.severity DESC, a.id) AS alarm_types
FROM site s
LEFT JOIN device d ON d.site_id = s.id AND d.active
LEFT JOIN device_state st ON st.device_id = d.id
WHERE {BUILDING} = %(building)s AND {SITE_SCOPE}
ORDER BY s.floor DESC NULLS LAST, s.id, d.id
"""


@dataclass(slots=True)
class MapSite:
    """A site with where it is (lat/lon, may be unplaced) and its live state."""

    id: str
    name: str
    kind: str
    floor: int | None
    building: str
    lat: float | None
    lon: float | None
    micro_grid_id: str
    micro_grid_name: str
    grid_id: str
    grid_name: str
    worst: int | None
    open_alarms: int
    open_work_orders: int  # not closed: open, or reported fixed and waiting for the re-inspection
    devices: int
    offline: int


@dataclass(slots=True)
class FloorDevice:
    """One device of a building (or a site with none: device_id None) with its state."""

    site_id: str
    site_name: str
    site_kind: str
    floor: int | None
    device_id: str | None
    device_kind: str | None
    location: str | None
    offline: bool
    never_seen: bool
    worst: int | None
    alarm_types: list[str]


def _scope(worker_id: str | None, communities: Sequence[str] | None) -> dict[str, Any]:
    return {"worker": worker_id, "merchant": None, "communities": None if communities is None else list(communities)}


def list_map_sites(conn: Connection[Any], *, worker_id: str | None, communities: Sequence[str] | None) -> list[MapSite]:
    """Every site the caller may see, with coordinates and live state."""
    with conn.cursor(row_factory=class_row(MapSite)) as cur:
        return cur.execute(MAP_SITES, _scope(worker_id, communities)).fetchall()


def list_building_devices(
    conn: Connection[Any], *, building: str, worker_id: str | None, communities: Sequence[str] | None
) -> list[FloorDevice]:
    """The devices of one building's sites (those the caller may see), top floor first."""
    with conn.cursor(row_factory=class_row(FloorDevice)) as cur:
        return cur.execute(BUILDING_DEVICES, {**_scope(worker_id, communities), "building": building}).fetchall()


# -- floor plans -------------------------------------------------------------------------------------------------

# ...and none of its sites outside the caller's communities (a key two communities shared before the registry
# refused it stays out of reach of both limited admins).
BUILDING_IN_SCOPE = f"""
SELECT 1 FROM site s WHERE {BUILDING} = %(building)s AND {SITE_SCOPE}
  AND NOT EXISTS (SELECT 1 FROM site s WHERE {BUILDING} = %(building)s
                  AND %(communities)s::text[] IS NOT NULL AND s.micro_grid_id NOT IN ({COMMUNITY_MICRO_GRIDS}))
LIMIT 1
"""
UPSERT_FLOOR_PLAN = """
INSERT INTO floor_plan (building, floor, content_type, data, uploaded_by) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (building, floor) DO UPDATE SET content_type = EXCLUDED.content_type, data = EXCLUDED.data,
    uploaded_by = EXCLUDED.uploaded_by, uploaded_at = now()
"""
DELETE_FLOOR_PLAN = "DELETE FROM floor_plan WHERE building = %s AND floor = %s"
SELECT_FLOOR_PLAN = "SELECT content_type, data FROM floor_plan WHERE building = %s AND floor = %s"
SELECT_PLANNED_FLOORS = "SELECT floor FROM floor_plan WHERE building = %s ORDER BY floor"


def building_in_scope(
    conn: Connection[Any], *, building: str, worker_id: str | None, communities: Sequence[str] | None
) -> bool:
    """Whether the caller may see some site of this building."""
    return (
        conn.execute(BUILDING_IN_SCOPE, {**_scope(worker_id, communities), "building": building}).fetchone() is not None
    )


def put_floor_plan(
    conn: Connection[Any], *, building: str, floor: int, content_type: str, data: bytes, by: str
) -> None:
    """Store (or replace) one floor's plan."""
    conn.execute(UPSERT_FLOOR_PLAN, (building, floor, content_type, data, by))


def delete_floor_plan(conn: Connection[Any], *, building: str, floor: int) -> bool:
    """Remove one floor's plan; False if there was none."""
    return conn.execute(DELETE_FLOOR_PLAN, (building, floor)).rowcount > 0


def get_floor_plan(conn: Connection[Any], *, building: str, floor: int) -> tuple[str, bytes] | None:
    """(content type, bytes) of one floor's plan."""
    row = conn.execute(SELECT_FLOOR_PLAN, (building, floor)).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]))


def planned_floors(conn: Connection[Any], *, building: str) -> set[int]:
    """The floors of a building that have a plan."""
    return {int(r[0]) for r in conn.execute(SELECT_PLANNED_FLOORS, (building,)).fetchall()}
