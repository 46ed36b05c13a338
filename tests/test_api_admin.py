"""Admin API: registry CRUD for every kind, bulk import with the `gridwatch load` YAML, silences, rules and
policy in force."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env, raise_alarm
from tests.conftest import ROOT


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


# Written in dependency order; deleted in reverse.
CHAIN: list[tuple[str, str, dict[str, Any]]] = [
    ("communities", "c9", {"name": "Ninth", "address": "9 Road"}),
    ("grids", "g9", {"community_id": "c9", "name": "Grid nine"}),
    ("micro-grids", "mg9", {"grid_id": "g9", "name": "Micro nine"}),
    (
        "workers",
        "w9",
        {
            "community_id": "c9",
            "name": "Zhao",
            "role": "micro_grid_worker",
            "micro_grids": ["mg9"],
            "notify": ["json://127.0.0.1:9/w9"],
            "roster": "Mon-Fri 09:00-17:00",
        },
    ),
    ("merchants", "m9", {"community_id": "c9", "name": "Hotpot", "notify": []}),
    ("sites", "s9", {"micro_grid_id": "mg9", "merchant_id": "m9", "kind": "shop", "name": "Hotpot", "floor": 1}),
    ("devices", "gw9", {"kind": "gateway", "site_id": "s9", "location": "storage"}),
    (
        "devices",
        "gas-9",
        {
            "kind": "gas_detector",
            "site_id": "s9",
            "location": "kitchen",
            "adapter": "zigbee2mqtt",
            "foreign_id": "kitchen-gas",
            "gateway_id": "gw9",
            "battery": True,
        },
    ),
]


def test_registry_crud_round_trip(env: ApiEnv) -> None:
    h = env.headers("admin")
    for kind, item_id, body in CHAIN:
        r = env.client.put(f"/api/v1/admin/{kind}/{item_id}", json=body, headers=h)
        assert r.status_code == 200, (kind, r.text)
        got = env.client.get(f"/api/v1/admin/{kind}/{item_id}", headers=h).json()
        assert {k: got[k] for k in body} == body
    assert env.client.get("/api/v1/admin/devices/gas-9", headers=h).json()["report_interval_s"] == 86400, (
        "a battery device defaults to the daily report interval"
    )
    assert env.client.get("/api/v1/admin/workers?community_id=c9", headers=h).json()["items"][0]["id"] == "w9"
    # the new worker's token sees the new micro-grid's alarms and nothing else
    with env.conn() as conn, conn.transaction():
        alarm_id = raise_alarm(conn, "gas-9")
    made = env.client.post("/api/v1/admin/tokens", json={"role": "worker", "worker_id": "w9"}, headers=h).json()
    seen = env.client.get("/api/v1/alarms", headers={"Authorization": f"Bearer {made['token']}"}).json()["items"]
    assert [a["id"] for a in seen] == [alarm_id]
    # change coverage: replace, not append
    w9 = {**CHAIN[3][2], "micro_grids": []}
    assert env.client.put("/api/v1/admin/workers/w9", json=w9, headers=h).json()["micro_grids"] == []
    assert env.client.get("/api/v1/alarms", headers={"Authorization": f"Bearer {made['token']}"}).json()["items"] == []
    # deleting something still referenced says what refers to it
    r = env.client.delete("/api/v1/admin/sites/s9", headers=h)
    assert r.status_code == 409 and "device" in r.json()["detail"]
    r = env.client.delete("/api/v1/admin/devices/gas-9", headers=h)
    assert r.status_code == 409 and "alarm" in r.json()["detail"]
    assert env.client.delete("/api/v1/admin/devices/nope", headers=h).status_code == 404


def test_registry_delete_in_reverse_order(env: ApiEnv) -> None:
    h = env.headers("admin")
    for kind, item_id, body in CHAIN:
        assert env.client.put(f"/api/v1/admin/{kind}/{item_id}", json=body, headers=h).status_code == 200
    for kind, item_id, _ in reversed(CHAIN):
        r = env.client.delete(f"/api/v1/admin/{kind}/{item_id}", headers=h)
        assert r.status_code == 204, (kind, item_id, r.text)
        assert env.client.get(f"/api/v1/admin/{kind}/{item_id}", headers=h).status_code == 404


BAD_WRITES: list[tuple[str, str, dict[str, Any], str]] = [
    ("grids", "g8", {"community_id": "nowhere", "name": "x"}, "body.community_id"),
    ("sites", "s8", {"micro_grid_id": "mg1", "merchant_id": "ghost", "kind": "shop"}, "body.merchant_id"),
    ("sites", "s8", {"micro_grid_id": "mg1", "kind": "castle"}, "body.kind"),
    (
        "workers",
        "w8",
        {"community_id": "c1", "name": "x", "role": "micro_grid_worker", "micro_grids": ["zz"]},
        "body.micro_grids",
    ),
    ("workers", "w8", {"community_id": "c1", "name": "x", "role": "micro_grid_worker", "roster": "weekdays"}, "body"),
    (
        "devices",
        "d8",
        {"kind": "gas_detector", "site_id": "s1", "location": "kitchen", "gateway_id": "gas-1"},
        "body.gateway_id",
    ),
    ("devices", "d8", {"kind": "gas_detector", "site_id": "s1", "location": "kitchen", "adapter": "shelly"}, "body"),
    ("devices", "bad id!", {"kind": "gas_detector", "site_id": "s1", "location": "kitchen"}, "path.item_id"),
]


def test_registry_validation_names_the_field(env: ApiEnv) -> None:
    for kind, item_id, body, field in BAD_WRITES:
        r = env.client.put(f"/api/v1/admin/{kind}/{item_id}", json=body, headers=env.headers("admin"))
        assert r.status_code == 422, (kind, body, r.text)
        assert r.json()["detail"].startswith(field), (kind, body, r.json())


def test_list_pagination(env: ApiEnv) -> None:
    h = env.headers("admin")
    first = env.client.get("/api/v1/admin/devices?limit=2", headers=h).json()
    assert len(first["items"]) == 2 and first["next_offset"] == 2
    rest = env.client.get("/api/v1/admin/devices?limit=2&offset=2", headers=h).json()
    ids = [d["id"] for d in first["items"] + rest["items"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == 4
    assert rest["next_offset"] == 4, "a full page cannot know it was the last"
    last = env.client.get("/api/v1/admin/devices?limit=2&offset=4", headers=h).json()
    assert last == {"items": [], "next_offset": None}


def test_bulk_import_is_the_load_file(env: ApiEnv) -> None:
    h = {**env.headers("admin"), "Content-Type": "application/yaml"}
    text = (ROOT / "examples" / "storage-area.yaml").read_bytes()
    r = env.client.post("/api/v1/admin/import", content=text, headers=h)
    assert r.status_code == 200, r.text
    counts = r.json()["counts"]
    assert counts["merchants"] == 57
    again = env.client.post("/api/v1/admin/import", content=text, headers=h)
    assert again.json() == r.json(), "idempotent, like gridwatch load"
    listed = env.client.get(
        f"/api/v1/admin/merchants?community_id={r.json()['community']}&limit=500", headers=env.headers("admin")
    ).json()["items"]
    assert len(listed) == 57
    bad = env.client.post(
        "/api/v1/admin/import",
        headers=h,
        content=b"community: {id: c1, name: x}\ndevices:\n  - {id: d1, kind: toaster, site: s1, location: kitchen}\n",
    )
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("body:3: devices.0.kind"), bad.json()


def test_silences(env: ApiEnv) -> None:
    h = env.headers("admin")
    ends = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    r = env.client.post(
        "/api/v1/admin/silences",
        headers=h,
        json={"device_id": "gas-2", "ends_at": ends, "reason": "detector replacement"},
    )
    assert r.status_code == 201, r.text
    silence = r.json()
    assert (silence["created_by"], silence["include_life_safety"]) == ("admin:1", False)
    assert [s["id"] for s in env.client.get("/api/v1/admin/silences", headers=h).json()["items"]] == [silence["id"]]
    both = env.client.post(
        "/api/v1/admin/silences", headers=h, json={"device_id": "gas-2", "site_id": "s2", "ends_at": ends}
    )
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]
    past = env.client.post("/api/v1/admin/silences", headers=h, json={"site_id": "s2", "ends_at": "2020-01-01T00:00Z"})
    assert past.status_code == 422 and past.json()["detail"].startswith("body.ends_at")
    ghost = env.client.post("/api/v1/admin/silences", headers=h, json={"site_id": "nowhere", "ends_at": ends})
    assert ghost.status_code == 422 and ghost.json()["detail"].startswith("body.site_id")
    assert env.client.delete(f"/api/v1/admin/silences/{silence['id']}", headers=h).status_code == 204
    assert env.client.get("/api/v1/admin/silences", headers=h).json()["items"] == []
    planned_start = datetime.now(UTC) + timedelta(days=1)
    planned = env.client.post(
        "/api/v1/admin/silences",
        headers=h,
        json={
            "site_id": "s2",
            "starts_at": planned_start.isoformat(),
            "ends_at": (planned_start + timedelta(hours=3)).isoformat(),
            "reason": "rewiring",
        },
    )
    assert planned.status_code == 201, planned.text
    assert datetime.fromisoformat(planned.json()["starts_at"]) == planned_start
    assert env.client.delete(f"/api/v1/admin/silences/{silence['id']}", headers=h).status_code == 404


def test_rules_and_policy_in_force(env: ApiEnv) -> None:
    body = env.client.get("/api/v1/admin/rules", headers=env.headers("admin")).json()
    gas = next(r for r in body["rules"] if r["id"] == "GAS-02")
    assert (gas["alarm_type"], gas["raise_at"], gas["severity"]) == ("gas_leak", 25, 4)
    assert body["score_policy"]["default"]["base"] == 100
