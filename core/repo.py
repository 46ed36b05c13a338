"""Registry SQL: upserts from a registry file and the device lookups the hot path needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql
from psycopg.rows import class_row, dict_row, tuple_row

from core.domain import Adapter, Alarm, Device, DeviceKind, Location, WorkerRole
from core.errors import ConflictError
from core.registry import RegistryIn

# Every column of the alarm table, in core.domain.Alarm's order: the dataclass is the one declaration of an alarm.
ALARM_COLUMNS = tuple(f.name for f in dataclasses.fields(Alarm))


def alarm_columns(alias: str = "") -> str:
    """ALARM_COLUMNS for a SELECT list or a RETURNING clause, qualified by a table alias if given."""
    return ", ".join(f"{alias}.{c}" if alias else c for c in ALARM_COLUMNS)


UPSERT_COMMUNITY = """
INSERT INTO community (id, name, timezone, address, updated_at) VALUES (%s, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, timezone = EXCLUDED.timezone, address = EXCLUDED.address,
    updated_at = now()
"""
UPSERT_GRID = """
INSERT INTO grid (id, community_id, name) VALUES (%s, %s, %s)
ON CONFLICT (id) DO UPDATE SET community_id = EXCLUDED.community_id, name = EXCLUDED.name
"""
UPSERT_MICRO_GRID = """
INSERT INTO micro_grid (id, grid_id, name) VALUES (%s, %s, %s)
ON CONFLICT (id) DO UPDATE SET grid_id = EXCLUDED.grid_id, name = EXCLUDED.name
"""
UPSERT_WORKER = """
INSERT INTO worker (id, community_id, name, role, phone, locale, notify_urls, roster, on_call, active)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, true)
ON CONFLICT (id) DO UPDATE SET community_id = EXCLUDED.community_id, name = EXCLUDED.name, role = EXCLUDED.role,
    phone = EXCLUDED.phone, locale = EXCLUDED.locale, notify_urls = EXCLUDED.notify_urls,
    roster = EXCLUDED.roster, on_call = EXCLUDED.on_call, active = true
"""
DELETE_WORKER_COVERAGE = "DELETE FROM worker_micro_grid WHERE worker_id = ANY(%s)"
INSERT_WORKER_COVERAGE = "INSERT INTO worker_micro_grid (worker_id, micro_grid_id) VALUES (%s, %s)"
DELETE_WORKER_GRIDS = "DELETE FROM worker_grid WHERE worker_id = ANY(%s)"
INSERT_WORKER_GRID = "INSERT INTO worker_grid (worker_id, grid_id) VALUES (%s, %s)"
UPSERT_MERCHANT = """
INSERT INTO merchant (id, community_id, name, contact, phone, notify_urls) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET community_id = EXCLUDED.community_id, name = EXCLUDED.name,
    contact = EXCLUDED.contact, phone = EXCLUDED.phone, notify_urls = EXCLUDED.notify_urls
"""
UPSERT_SITE = """
INSERT INTO site (id, micro_grid_id, merchant_id, kind, name, address, floor, flags, lpg, building, lat, lon)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET micro_grid_id = EXCLUDED.micro_grid_id, merchant_id = EXCLUDED.merchant_id,
    kind = EXCLUDED.kind, name = EXCLUDED.name, address = EXCLUDED.address, floor = EXCLUDED.floor,
    flags = EXCLUDED.flags, lpg = EXCLUDED.lpg, building = EXCLUDED.building, lat = EXCLUDED.lat, lon = EXCLUDED.lon
"""
# A building key (a site's `building`, or the site on its own) names one building of one community: the map, its floor
# plans and DEV-03 group every site that gives the key, so a key used in a second community would let that
# community's admin reach the first's building (issue 22 review).
SHARED_BUILDINGS = """
SELECT coalesce(s.building, s.id) AS building FROM site s
JOIN micro_grid mg ON mg.id = s.micro_grid_id JOIN grid g ON g.id = mg.grid_id
WHERE coalesce(s.building, s.id) = ANY(%(keys)s::text[])
GROUP BY 1 HAVING count(DISTINCT g.community_id) > 1
ORDER BY 1
"""
UPSERT_DEVICE = """
INSERT INTO device (id, kind, site_id, location, adapter, foreign_id, battery, report_interval_s, gateway_id,
                    model, mounting, active)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)
ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, site_id = EXCLUDED.site_id, location = EXCLUDED.location,
    adapter = EXCLUDED.adapter, foreign_id = EXCLUDED.foreign_id, battery = EXCLUDED.battery,
    report_interval_s = EXCLUDED.report_interval_s, gateway_id = EXCLUDED.gateway_id, model = EXCLUDED.model,
    mounting = EXCLUDED.mounting, active = true
"""


def upsert_registry(conn: Connection[Any], *, registry: RegistryIn) -> dict[str, int]:
    """Insert or update everything in a registry file; returns counts per kind. Never commits."""
    c = registry.community
    conn.execute(UPSERT_COMMUNITY, (c.id, c.name, c.timezone, c.address))
    with conn.cursor() as cur:
        cur.executemany(UPSERT_GRID, [(g.id, c.id, g.name) for g in registry.grids])
        cur.executemany(UPSERT_MICRO_GRID, [(m.id, g.id, m.name) for g in registry.grids for m in g.micro_grids])
        cur.executemany(
            UPSERT_WORKER,
            [
                (w.id, c.id, w.name, w.role.value, w.phone, w.locale, w.notify, w.roster, w.on_call)
                for w in registry.workers
            ],
        )
        worker_ids = [w.id for w in registry.workers]
        cur.execute(DELETE_WORKER_COVERAGE, (worker_ids,))
        cur.executemany(INSERT_WORKER_COVERAGE, [(w.id, mg) for w in registry.workers for mg in w.micro_grids])
        cur.execute(DELETE_WORKER_GRIDS, (worker_ids,))
        cur.executemany(INSERT_WORKER_GRID, [(w.id, g) for w in registry.workers for g in w.grids])
        cur.executemany(
            UPSERT_MERCHANT, [(m.id, c.id, m.name, m.contact, m.phone, m.notify) for m in registry.merchants]
        )
        cur.executemany(
            UPSERT_SITE,
            [
                (
                    s.id,
                    s.micro_grid,
                    s.merchant,
                    s.kind.value,
                    s.name,
                    s.address,
                    s.floor,
                    s.flags,
                    s.lpg,
                    s.building,
                    s.lat,
                    s.lon,
                )
                for s in registry.sites
            ],
        )
        cur.executemany(
            UPSERT_DEVICE,
            [
                (
                    d.id,
                    d.kind.value,
                    d.site,
                    d.location.value,
                    d.adapter.value,
                    d.foreign_id,
                    d.battery,
                    d.interval_s,
                    d.gateway,
                    d.model,
                    d.mounting.value if d.mounting else None,
                )
                for d in registry.devices
            ],
        )
    check_buildings(conn, keys=[s.building or s.id for s in registry.sites])
    return {
        "grids": len(registry.grids),
        "micro_grids": sum(len(g.micro_grids) for g in registry.grids),
        "workers": len(registry.workers),
        "merchants": len(registry.merchants),
        "sites": len(registry.sites),
        "devices": len(registry.devices),
    }


DEVICE_SELECT = """
SELECT d.id, d.kind, d.site_id, d.location, d.adapter, d.foreign_id, d.report_interval_s, d.battery, d.gateway_id,
       coalesce(s.building, s.id), d.mounting, s.lpg
FROM device d JOIN site s ON s.id = d.site_id
WHERE d.active"""
SELECT_DEVICES = DEVICE_SELECT + " AND d.id = ANY(%s)"
SELECT_DEVICES_BY_FOREIGN = DEVICE_SELECT + " AND d.adapter = %s AND d.foreign_id = ANY(%s)"
SELECT_ALL_DEVICES = DEVICE_SELECT


def _device(row: tuple[Any, ...]) -> Device:
    return Device(
        id=row[0],
        kind=DeviceKind(row[1]),
        site_id=row[2],
        location=Location(row[3]),
        adapter=Adapter(row[4]),
        foreign_id=row[5],
        report_interval_s=row[6],
        battery=row[7],
        gateway_id=row[8],
        building_id=row[9],
        mounting=row[10],
        lpg=row[11],
    )


def get_devices(conn: Connection[Any], *, ids: Sequence[str]) -> dict[str, Device]:
    """Active devices by id."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(SELECT_DEVICES, (list(ids),))
        return {row[0]: _device(row) for row in cur.fetchall()}


def get_devices_by_foreign_id(
    conn: Connection[Any], *, adapter: Adapter, foreign_ids: Sequence[str]
) -> dict[str, Device]:
    """Active devices of one adapter keyed by their foreign id (bridge name, Shelly id, Tasmota topic)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(SELECT_DEVICES_BY_FOREIGN, (adapter.value, list(foreign_ids)))
        return {row[5]: _device(row) for row in cur.fetchall()}


def get_all_devices(conn: Connection[Any]) -> list[Device]:
    """Every active device (warms the ingest cache)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(SELECT_ALL_DEVICES)
        return [_device(row) for row in cur.fetchall()]


# -- registry CRUD (the API's admin routes) ---------------------------------------------------------------------


def exists(conn: Connection[Any], *, table: str, id: str) -> bool:
    """Whether a registry row exists."""
    query = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(sql.Identifier(table))
    return conn.execute(query, (id,)).fetchone() is not None


REGISTRY_SELECT: dict[str, str] = {
    "community": "SELECT id, name, timezone, address FROM community",
    "grid": "SELECT id, community_id, name FROM grid",
    "micro_grid": "SELECT id, grid_id, name FROM micro_grid",
    "worker": """SELECT w.id, w.community_id, w.name, w.role, w.phone, w.locale, w.notify_urls AS notify, w.roster,
        w.on_call, w.active,
        coalesce((SELECT array_agg(micro_grid_id ORDER BY micro_grid_id) FROM worker_micro_grid
                  WHERE worker_id = w.id), '{}') AS micro_grids,
        coalesce((SELECT array_agg(grid_id ORDER BY grid_id) FROM worker_grid WHERE worker_id = w.id), '{}')
            AS grids
        FROM worker w""",
    "merchant": "SELECT id, community_id, name, contact, phone, notify_urls AS notify FROM merchant",
    "site": """SELECT id, micro_grid_id, merchant_id, kind, name, address, floor, flags, lpg, building, lat, lon
        FROM site""",
    "device": """SELECT id, kind, site_id, location, adapter, foreign_id, battery, report_interval_s, gateway_id,
        model, mounting, active FROM device""",
}
# The alias each SELECT uses for its table (worker's has one).
_ALIAS = {"worker": "w.id"}
# The community each registry row belongs to, as an expression over its REGISTRY_SELECT (an admin limited to some
# communities sees and edits only their rows).
REGISTRY_COMMUNITY: dict[str, str] = {
    "community": "community.id",
    "grid": "grid.community_id",
    "micro_grid": "(SELECT g.community_id FROM grid g WHERE g.id = micro_grid.grid_id)",
    "worker": "w.community_id",
    "merchant": "merchant.community_id",
    "site": """(SELECT g.community_id FROM micro_grid mg JOIN grid g ON g.id = mg.grid_id
        WHERE mg.id = site.micro_grid_id)""",
    "device": """(SELECT g.community_id FROM site s JOIN micro_grid mg ON mg.id = s.micro_grid_id
        JOIN grid g ON g.id = mg.grid_id WHERE s.id = device.site_id)""",
}


def list_registry(
    conn: Connection[Any],
    *,
    table: str,
    limit: int,
    offset: int,
    filters: dict[str, str | None],
    communities: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Registry rows of one kind, by id, with optional equality filters on parent columns (and only the rows of
    some communities, when given)."""
    wheres: list[sql.Composable] = [
        sql.SQL("{} = %s").format(sql.Identifier(col)) for col, value in filters.items() if value is not None
    ]
    params: list[Any] = [v for v in filters.values() if v is not None]
    if communities is not None:
        wheres.append(sql.SQL(REGISTRY_COMMUNITY[table] + " = ANY(%s)"))
        params.append(list(communities))
    query: sql.Composable = sql.SQL(REGISTRY_SELECT[table])
    if wheres:
        query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(wheres)
    query = query + sql.SQL(" ORDER BY id LIMIT %s OFFSET %s")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, [*params, limit, offset]).fetchall()


def get_registry(
    conn: Connection[Any], *, table: str, id: str, communities: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """One registry row (None if there is none, or it is outside the given communities)."""
    query = REGISTRY_SELECT[table] + f" WHERE {_ALIAS.get(table, 'id')} = %s"
    params: list[Any] = [id]
    if communities is not None:
        query += f" AND {REGISTRY_COMMUNITY[table]} = ANY(%s)"
        params.append(list(communities))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def in_communities(conn: Connection[Any], *, table: str, id: str, communities: Sequence[str] | None) -> bool:
    """Whether a registry row exists and belongs to one of the communities (None: any community)."""
    return get_registry(conn, table=table, id=id, communities=communities) is not None


def upsert_community(conn: Connection[Any], *, id: str, name: str, timezone: str, address: str) -> None:
    """Insert or update a community (the same statement `gridwatch load` runs)."""
    conn.execute(UPSERT_COMMUNITY, (id, name, timezone, address))


def upsert_grid(conn: Connection[Any], *, id: str, community_id: str, name: str) -> None:
    """Insert or update a grid."""
    conn.execute(UPSERT_GRID, (id, community_id, name))


def upsert_micro_grid(conn: Connection[Any], *, id: str, grid_id: str, name: str) -> None:
    """Insert or update a micro-grid."""
    conn.execute(UPSERT_MICRO_GRID, (id, grid_id, name))


UPDATE_WORKER_ACTIVE = "UPDATE worker SET active = %s WHERE id = %s"


def upsert_worker(
    conn: Connection[Any],
    *,
    id: str,
    community_id: str,
    name: str,
    role: str,
    phone: str,
    locale: str,
    notify: list[str],
    roster: str | None,
    on_call: bool,
    active: bool,
    micro_grids: list[str],
    grids: list[str],
) -> None:
    """Insert or update a worker with the micro-grids and grids they cover (replacing the old coverage)."""
    conn.execute(UPSERT_WORKER, (id, community_id, name, role, phone, locale, notify, roster, on_call))
    conn.execute(UPDATE_WORKER_ACTIVE, (active, id))
    conn.execute(DELETE_WORKER_COVERAGE, ([id],))
    conn.execute(DELETE_WORKER_GRIDS, ([id],))
    with conn.cursor() as cur:
        cur.executemany(INSERT_WORKER_COVERAGE, [(id, mg) for mg in micro_grids])
        cur.executemany(INSERT_WORKER_GRID, [(id, g) for g in grids])


def upsert_merchant(
    conn: Connection[Any], *, id: str, community_id: str, name: str, contact: str, phone: str, notify: list[str]
) -> None:
    """Insert or update a merchant."""
    conn.execute(UPSERT_MERCHANT, (id, community_id, name, contact, phone, notify))


def upsert_site(
    conn: Connection[Any],
    *,
    id: str,
    micro_grid_id: str,
    merchant_id: str | None,
    kind: str,
    name: str,
    address: str,
    floor: int | None,
    flags: list[str],
    lpg: bool,
    building: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
) -> None:
    """Insert or update a site; ConflictError when its building is another community's."""
    conn.execute(
        UPSERT_SITE, (id, micro_grid_id, merchant_id, kind, name, address, floor, flags, lpg, building, lat, lon)
    )
    check_buildings(conn, keys=[building or id])


def check_buildings(conn: Connection[Any], *, keys: Sequence[str]) -> None:
    """ConflictError naming the building keys that sites of more than one community give."""
    shared = [str(r[0]) for r in conn.execute(SHARED_BUILDINGS, {"keys": list(keys)}).fetchall()]
    if shared:
        raise ConflictError(
            f"building {', '.join(map(repr, shared))} is already a building of another community: "
            "give this community's building its own name"
        )


UPDATE_DEVICE_ACTIVE = "UPDATE device SET active = %s WHERE id = %s"


def upsert_device(
    conn: Connection[Any],
    *,
    id: str,
    kind: str,
    site_id: str,
    location: str,
    adapter: str,
    foreign_id: str | None,
    battery: bool,
    report_interval_s: int,
    gateway_id: str | None,
    model: str,
    active: bool,
    mounting: str | None = None,
) -> None:
    """Insert or update a device (its rule state is rules' and is created with its first message)."""
    conn.execute(
        UPSERT_DEVICE,
        (id, kind, site_id, location, adapter, foreign_id, battery, report_interval_s, gateway_id, model, mounting),
    )
    conn.execute(UPDATE_DEVICE_ACTIVE, (active, id))


# What still points at a registry row, so a delete can say why it is refused instead of failing on a key.
REGISTRY_DEPENDENTS: dict[str, list[tuple[str, str]]] = {
    "community": [
        ("grid", "SELECT count(*) FROM grid WHERE community_id = %s"),
        ("admin token (limited to it)", "SELECT count(*) FROM api_token_community WHERE community_id = %s"),
        ("worker", "SELECT count(*) FROM worker WHERE community_id = %s"),
        ("merchant", "SELECT count(*) FROM merchant WHERE community_id = %s"),
    ],
    "grid": [
        ("micro_grid", "SELECT count(*) FROM micro_grid WHERE grid_id = %s"),
        ("worker (leading it)", "SELECT count(*) FROM worker_grid WHERE grid_id = %s"),
    ],
    "micro_grid": [
        ("site", "SELECT count(*) FROM site WHERE micro_grid_id = %s"),
        ("alarm", "SELECT count(*) FROM alarm WHERE micro_grid_id = %s"),
        ("worker (covering it)", "SELECT count(*) FROM worker_micro_grid WHERE micro_grid_id = %s"),
    ],
    "worker": [
        ("api token", "SELECT count(*) FROM api_token WHERE worker_id = %s"),
        ("notification", "SELECT count(*) FROM notification WHERE worker_id = %s"),
    ],
    "merchant": [
        ("site", "SELECT count(*) FROM site WHERE merchant_id = %s"),
        ("api token", "SELECT count(*) FROM api_token WHERE merchant_id = %s"),
        ("notification", "SELECT count(*) FROM notification WHERE merchant_id = %s"),
    ],
    "site": [
        ("device", "SELECT count(*) FROM device WHERE site_id = %s"),
        ("alarm", "SELECT count(*) FROM alarm WHERE site_id = %s"),
    ],
    "device": [
        ("alarm", "SELECT count(*) FROM alarm WHERE device_id = %s"),
        ("device (as its gateway)", "SELECT count(*) FROM device WHERE gateway_id = %s"),
    ],
}


def registry_dependents(conn: Connection[Any], *, table: str, id: str) -> dict[str, int]:
    """What refers to this row, by kind (only non-zero counts)."""
    found: dict[str, int] = {}
    for what, query in REGISTRY_DEPENDENTS[table]:
        row = conn.execute(query, (id,)).fetchone()
        n = int(row[0] if isinstance(row, tuple) else next(iter(row.values()))) if row else 0
        if n:
            found[what] = n
    return found


def delete_registry(conn: Connection[Any], *, table: str, id: str) -> bool:
    """Delete one registry row; False if there was none."""
    # A device's rule state goes with it (device_state ... ON DELETE CASCADE).
    query = sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table))
    return conn.execute(query, (id,)).rowcount > 0


# --- who can hear (core.routing decides who does) -------------------------------------------------------------


@dataclass(slots=True)
class Recipient:
    """A worker (or a merchant, role 'merchant') who can be sent messages."""

    id: str
    name: str
    role: str
    locale: str
    notify_urls: list[str]
    roster: str | None = None
    on_call: bool = False
    covers_micro_grid: bool = False
    covers_grid: bool = False
    leads_grid: bool = False

    @property
    def is_merchant(self) -> bool:
        return self.role == "merchant"


# Only the workers routing can pick (core.routing): those covering a micro-grid of the grid, its leaders, the
# community's duty office and fire station, and whoever is on call. Not the whole community: in a street of
# hundreds of workers, one alarm's routing in a storm read all of them (issue 18).
# The community-wide tiers (core.routing): whoever holds these roles can be picked for any micro-grid.
COMMUNITY_ROLES = [WorkerRole.COMMUNITY_DUTY.value, WorkerRole.FIRE_STATION.value]
SELECT_COMMUNITY_WORKERS = """
WITH covering AS (
    SELECT wm.worker_id, bool_or(wm.micro_grid_id = %(mg)s) AS covers_micro_grid
    FROM worker_micro_grid wm JOIN micro_grid m ON m.id = wm.micro_grid_id
    WHERE m.grid_id = %(grid)s GROUP BY wm.worker_id
), leaders AS (
    SELECT worker_id FROM worker_grid WHERE grid_id = %(grid)s
)
SELECT w.id, w.name, w.role, w.locale, w.notify_urls, w.roster, w.on_call,
       coalesce(c.covers_micro_grid, false) AS covers_micro_grid,
       c.worker_id IS NOT NULL AS covers_grid,
       l.worker_id IS NOT NULL AS leads_grid
FROM worker w LEFT JOIN covering c ON c.worker_id = w.id LEFT JOIN leaders l ON l.worker_id = w.id
WHERE w.active AND w.community_id = %(community)s
  AND (c.worker_id IS NOT NULL OR l.worker_id IS NOT NULL OR w.on_call OR w.role = ANY(%(community_roles)s))
ORDER BY w.id
"""


def get_community_workers(
    conn: Connection[Any], *, community_id: str, grid_id: str, micro_grid_id: str
) -> list[Recipient]:
    """The active workers of a community that routing can pick for a micro-grid (see the query), flagged with how
    they relate to it and its grid."""
    with conn.cursor(row_factory=class_row(Recipient)) as cur:
        return cur.execute(
            SELECT_COMMUNITY_WORKERS,
            {"community": community_id, "grid": grid_id, "mg": micro_grid_id, "community_roles": COMMUNITY_ROLES},
        ).fetchall()


SELECT_COMMUNITY_TIMEZONE = "SELECT timezone FROM community WHERE id = %s"


def get_community_timezone(conn: Connection[Any], *, community_id: str) -> str | None:
    """The time zone a community's rosters are read in."""
    row = conn.execute(SELECT_COMMUNITY_TIMEZONE, (community_id,)).fetchone()
    return None if row is None else str(row[0])


# -- patrol coverage, as field's API and report's reports both count it ---------------------------------------------

# Per kind of round (alias r, its stops p): stops due, visited, checked and nobody home (a gas campaign's households),
# and missed: nobody visited the stop before its round ended. One definition for GET /api/v1/patrol-coverage
# (field.patrol_repo) and the reports (report.repo); each adds its own scope and period.
PATROL_COVERAGE_COUNTS = """
SELECT r.kind,
       count(*)::int AS due,
       count(*) FILTER (WHERE p.visited_at IS NOT NULL)::int AS visited,
       count(*) FILTER (WHERE p.outcome = 'checked')::int AS checked,
       count(*) FILTER (WHERE p.outcome = 'not_home')::int AS not_home,
       count(*) FILTER (WHERE p.visited_at IS NULL AND r.due_end <= %(now)s)::int AS missed
FROM patrol_round r JOIN patrol_stop p ON p.round_id = r.id"""
