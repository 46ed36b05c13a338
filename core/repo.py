"""Registry SQL: upserts from a registry file and the device lookups the hot path needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection
from psycopg.rows import tuple_row

from core.domain import Adapter, Device, DeviceKind, Location
from core.registry import RegistryIn

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
INSERT INTO site (id, micro_grid_id, merchant_id, kind, name, address, floor, flags, lpg, building)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET micro_grid_id = EXCLUDED.micro_grid_id, merchant_id = EXCLUDED.merchant_id,
    kind = EXCLUDED.kind, name = EXCLUDED.name, address = EXCLUDED.address, floor = EXCLUDED.floor,
    flags = EXCLUDED.flags, lpg = EXCLUDED.lpg, building = EXCLUDED.building
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
INSERT_DEVICE_STATE = """
INSERT INTO device_state (device_id) SELECT unnest(%s::text[]) ON CONFLICT (device_id) DO NOTHING
"""


def upsert_registry(conn: Connection[Any], *, registry: RegistryIn) -> dict[str, int]:
    """Insert or update everything in a registry file; returns counts per kind. Never commits."""
    c = registry.community
    conn.execute(UPSERT_COMMUNITY, (c.id, c.name, c.timezone, c.address))
    with conn.cursor() as cur:
        cur.executemany(UPSERT_GRID, [(g.id, c.id, g.name) for g in registry.grids])
        cur.executemany(UPSERT_MICRO_GRID, [(m.id, g.id, m.name) for g in registry.grids for m in g.micro_grids])
        cur.executemany(UPSERT_WORKER, [
            (w.id, c.id, w.name, w.role.value, w.phone, w.locale, w.notify, w.roster, w.on_call)
            for w in registry.workers
        ])
        worker_ids = [w.id for w in registry.workers]
        cur.execute(DELETE_WORKER_COVERAGE, (worker_ids,))
        cur.executemany(INSERT_WORKER_COVERAGE, [(w.id, mg) for w in registry.workers for mg in w.micro_grids])
        cur.execute(DELETE_WORKER_GRIDS, (worker_ids,))
        cur.executemany(INSERT_WORKER_GRID, [(w.id, g) for w in registry.workers for g in w.grids])
        cur.executemany(UPSERT_MERCHANT, [
            (m.id, c.id, m.name, m.contact, m.phone, m.notify) for m in registry.merchants
        ])
        cur.executemany(UPSERT_SITE, [
            (s.id, s.micro_grid, s.merchant, s.kind.value, s.name, s.address, s.floor, s.flags, s.lpg, s.building)
            for s in registry.sites
        ])
        cur.executemany(UPSERT_DEVICE, [
            (d.id, d.kind.value, d.site, d.location.value, d.adapter.value, d.foreign_id, d.battery,
             d.interval_s, d.gateway, d.model, d.mounting.value if d.mounting else None)
            for d in registry.devices
        ])
        cur.execute(INSERT_DEVICE_STATE, ([d.id for d in registry.devices],))
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
    return Device(id=row[0], kind=DeviceKind(row[1]), site_id=row[2], location=Location(row[3]),
                  adapter=Adapter(row[4]), foreign_id=row[5], report_interval_s=row[6], battery=row[7],
                  gateway_id=row[8], building_id=row[9], mounting=row[10], lpg=row[11])


def get_devices(conn: Connection[Any], *, ids: Sequence[str]) -> dict[str, Device]:
    """Active devices by id."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(SELECT_DEVICES, (list(ids),))
        return {row[0]: _device(row) for row in cur.fetchall()}


def get_devices_by_foreign_id(conn: Connection[Any], *, adapter: Adapter,
                              foreign_ids: Sequence[str]) -> dict[str, Device]:
    """Active devices of one adapter keyed by their foreign id (bridge name, Shelly id, Tasmota topic)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(SELECT_DEVICES_BY_FOREIGN, (adapter.value, list(foreign_ids)))
        return {row[5]: _device(row) for row in cur.fetchall()}


def get_all_devices(conn: Connection[Any]) -> list[Device]:
    """Every active device (warms the ingest cache)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(SELECT_ALL_DEVICES)
        return [_device(row) for row in cur.fetchall()]


