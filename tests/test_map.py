"""Issue 22: the map. Sites carry optional, validated coordinates from the registry (and the API); /map places the
caller's buildings from them in an inline SVG grouped by grid and micro-grid, coloured by live state; a building
opens its floors with each device's state; everything is scoped like the board."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import mapview
from api.map_repo import MapSite
from core import repo as core_repo
from core.errors import RegistryError
from core.registry import parse_registry, read_registry
from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env, raise_alarm
from tests.conftest import ROOT
from tests.field_helpers import jpeg, png
from tests.support import set_device_state

PLACES = {
    "s1": (30.6800, 104.0700, None),
    "s2": (30.6804, 104.0706, None),
    "s3": (30.6804, 104.0706, "s2"),  # the tea house is a shop in block 2
    "s4": (30.6812, 104.0712, None),
    "s9": (30.7000, 104.0900, None),
}


def place_sites(conn: psycopg.Connection[Any]) -> None:
    """Coordinates for the hierarchy's sites (tests.api_helpers), through the same upsert the registry uses."""
    for row in core_repo.list_registry(conn, table="site", limit=100, offset=0, filters={}):
        lat, lon, building = PLACES[row["id"]]
        core_repo.upsert_site(
            conn,
            id=row["id"],
            micro_grid_id=row["micro_grid_id"],
            merchant_id=row["merchant_id"],
            kind=row["kind"],
            name=row["name"],
            address=row["address"],
            floor=1 if row["id"] == "s3" else row["floor"],
            flags=row["flags"],
            lpg=row["lpg"],
            building=building,
            lat=lat,
            lon=lon,
        )


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded, hierarchy=True) as e:
        with e.conn() as conn, conn.transaction():
            place_sites(conn)
        yield e


def login(client: TestClient, token: str) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = client.post("/login", data={"token": token, "csrf": csrf.group(1), "next": "/map"}, follow_redirects=False)
    assert r.status_code == 303, r.text


def session(env: ApiEnv, who: str) -> TestClient:
    client = TestClient(env.app, base_url="https://testserver")
    login(client, env.tokens[who])
    return client


def marker_states(html: str) -> dict[str, str]:
    return {key: state for state, key in re.findall(r'class="marker ([a-z-]+)" data-building="([^"]+)"', html)}


# -- coordinates in the registry --------------------------------------------------------------------------------

BASE = """\
community: {id: cx, name: X}
grids: [{id: gx, name: G, micro_grids: [{id: mgx, name: M}]}]
sites:
"""


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        ("  - {id: a, kind: building, micro_grid: mgx, lat: 30.68}\n", "both lat and lon"),
        ("  - {id: a, kind: building, micro_grid: mgx, lon: 104.07}\n", "both lat and lon"),
        ("  - {id: a, kind: building, micro_grid: mgx, lat: 91, lon: 104.07}\n", "lat"),
        ("  - {id: a, kind: building, micro_grid: mgx, lat: 30.68, lon: 181}\n", "lon"),
        ("  - {id: a, kind: building, micro_grid: mgx, lat: north, lon: 104.07}\n", "lat"),
        (
            "  - {id: a, kind: building, micro_grid: mgx, lat: 30.68, lon: 104.07}\n"
            "  - {id: b, kind: building, micro_grid: mgx, lat: 30.681, lon: 104.071}\n"
            "  - {id: c, kind: building, micro_grid: mgx, lat: 3.068, lon: 104.07}\n",  # a misplaced decimal point
            "site c: .* mistyped",
        ),
    ],
)
def test_coordinates_are_validated(sites: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(BASE + sites)


def test_the_examples_place_every_site() -> None:
    for name in ("storage-area.yaml", "open-compound.yaml"):
        registry = read_registry(ROOT / "examples" / name)
        assert registry.sites and all(s.lat is not None and s.lon is not None for s in registry.sites), name


def test_coordinates_through_the_api(env: ApiEnv) -> None:
    h = env.headers("admin")
    site = env.client.get("/api/v1/admin/sites/s1", headers=h).json()
    assert (site["lat"], site["lon"]) == (30.68, 104.07)
    body = {k: v for k, v in site.items() if k != "id"}
    assert env.client.put("/api/v1/admin/sites/s1", json={**body, "lat": 30.6801}, headers=h).status_code == 200
    assert env.client.put("/api/v1/admin/sites/s1", json={**body, "lon": None}, headers=h).status_code == 422
    assert env.client.put("/api/v1/admin/sites/s1", json={**body, "lat": -91}, headers=h).status_code == 422
    assert env.client.get("/api/v1/admin/sites/s1", headers=h).json()["lat"] == 30.6801


# -- the picture ----------------------------------------------------------------------------------------------------


def site(key: str, lat: float | None, lon: float | None, **kw: Any) -> MapSite:
    values: dict[str, Any] = {
        "id": key,
        "name": key.upper(),
        "kind": "building",
        "floor": None,
        "building": key,
        "lat": lat,
        "lon": lon,
        "micro_grid_id": "mg1",
        "micro_grid_name": "Micro one",
        "grid_id": "g1",
        "grid_name": "Grid one",
        "worst": None,
        "open_alarms": 0,
        "open_work_orders": 0,
        "devices": 1,
        "offline": 0,
    }
    return MapSite(**{**values, **kw})


def test_placement_keeps_geography_and_fits_the_width() -> None:
    view = mapview.build(
        [
            site("west", 30.68, 104.07),
            site("east", 30.68, 104.072, worst=4, open_alarms=2),
            site("north", 30.682, 104.07, offline=1),
            site("nowhere", None, None),
        ]
    )
    b = {x.key: x for x in view.buildings}
    assert b["east"].x > b["west"].x and b["north"].y < b["west"].y  # east is right, north is up
    assert abs(b["east"].y - b["west"].y) < 1e-6
    assert all(mapview.PAD - 1e-6 <= x.x <= mapview.WIDTH for x in view.placed)  # type: ignore[operator]
    assert [x.key for x in view.unplaced] == ["nowhere"]
    assert (b["east"].state, b["north"].state, b["west"].state) == ("sev-critical", "offline", "clear")
    assert view.tiles == []
    tiled = mapview.build(
        [site("west", 30.68, 104.07), site("east", 30.68, 104.072)], tile_url="/tiles/{z}/{x}/{y}.png"
    )
    assert tiled.tiles and all(t.href.startswith(f"/tiles/{tiled.zoom}/") for t in tiled.tiles)


@pytest.mark.parametrize(
    ("kw", "state"),
    [
        ({"open_work_orders": 1}, "work-order"),
        ({"open_work_orders": 2, "offline": 1}, "work-order"),  # a known hazard outranks a silent device
        ({"open_work_orders": 1, "worst": 3, "open_alarms": 1}, "sev-major"),  # an alarm outranks both
        ({"offline": 1}, "offline"),
        ({}, "clear"),
    ],
)
def test_a_building_state_ranks_alarms_then_work_orders_then_offline(kw: dict[str, Any], state: str) -> None:
    b = mapview.build([site("b", 30.68, 104.07, **kw)]).buildings[0]
    assert b.state == state


def test_a_building_with_an_open_work_order_is_coloured_so(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        for device in ("gas-1", "smoke-1", "gas-2", "gas-4"):
            set_device_state(conn, device, online=True, last_seen_at=datetime.now(UTC))
    h = env.headers("admin")
    # on the tea house (a shop in block 2): the building is coloured; on s4 with an alarm, the alarm wins
    order = env.client.post("/api/v1/work-orders", json={"site_id": "s3", "title": "exit blocked"}, headers=h)
    assert order.status_code == 201, order.text
    other = env.client.post("/api/v1/work-orders", json={"site_id": "s4", "title": "hose aged"}, headers=h)
    assert other.status_code == 201, other.text
    with env.conn() as conn, conn.transaction():
        raise_alarm(conn, "gas-4")
    admin = session(env, "admin")
    page = admin.get("/map?lang=en")
    states = marker_states(page.text)
    assert (states["s2"], states["s4"], states["s1"]) == ("work-order", "sev-critical", "clear")
    assert '<li class="work-order"><span class="dot"></span>work order open</li>' in page.text  # the legend
    assert re.search(r'class="building work-order" data-building="s2">.*?work order open', page.text, re.S)
    assert admin.get("/map/state").json()["s2"] == {"state": "work-order", "open": 0, "work_orders": 1, "offline": 0}
    assert "隐患工单未关闭" in admin.get("/map?lang=zh-CN").text
    # a worker of another micro-grid sees neither the building nor its order
    assert set(session(env, "w1").get("/map/state").json()) == {"s1"}

    # reported fixed it still waits for the re-inspection; passing it clears the building
    oid = order.json()["id"]
    assert env.client.post(f"/api/v1/work-orders/{oid}/fixed", json={}, headers=h).status_code == 200
    assert admin.get("/map/state").json()["s2"]["state"] == "work-order"
    passed = env.client.post(f"/api/v1/work-orders/{oid}/reinspection", json={"passed": True}, headers=h)
    assert passed.status_code == 200, passed.text
    assert admin.get("/map/state").json()["s2"] == {"state": "clear", "open": 0, "work_orders": 0, "offline": 0}


def test_the_map_places_colours_and_groups_the_buildings(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        raise_alarm(conn, "gas-3")  # in the tea house, a shop in block 2
        set_device_state(conn, "gas-1", online=False, status_at=datetime.now(UTC))
        for device in ("smoke-1", "gas-2", "gas-4"):
            set_device_state(conn, device, online=True, last_seen_at=datetime.now(UTC))
    admin = session(env, "admin")
    page = admin.get("/map?lang=en")
    assert page.status_code == 200
    states = marker_states(page.text)
    # s2 and s3 are one building; s1 (gas-1 offline), s4 all clear; c2's s9 never reported (no alarm: clear)
    assert states == {"s1": "offline", "s2": "sev-critical", "s4": "clear", "s9": "clear"}
    assert page.text.count('class="micro-grid"') == 4 and "Micro three" in page.text
    assert re.search(r"Grid one.*Micro one.*Noodle shop.*Micro two.*Block 2.*Grid two.*Block 4", page.text, re.S)
    assert "<svg" in page.text and "http://" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert admin.get("/map/state").json()["s2"] == {"state": "sev-critical", "open": 1, "work_orders": 0, "offline": 0}
    assert "网格地图" in admin.get("/map?lang=zh-CN").text

    # one community at a time: the street office chooses, by name
    assert 'href="/map?community=c2">Other community</a>' in page.text
    assert set(marker_states(admin.get("/map?community=c1").text)) == {"s1", "s2", "s4"}
    assert admin.get("/map?community=nope").status_code == 404
    assert admin.get("/map?community=c1'--").status_code == 422
    # scoped as the board: a community admin their community, a worker their micro-grid
    assert set(marker_states(session(env, "cadmin").get("/map").text)) == {"s1", "s2", "s4"}
    assert session(env, "cadmin").get("/map?community=c2").status_code == 404
    w1 = session(env, "w1")
    assert set(marker_states(w1.get("/map").text)) == {"s1"}
    assert set(w1.get("/map/state").json()) == {"s1"}
    assert w1.get("/map/buildings/s2").status_code == 404
    assert set(marker_states(session(env, "lead2").get("/map").text)) == {"s4"}
    merchant = session(env, "m1")
    assert merchant.get("/map").status_code == 403 and merchant.get("/map/state").status_code == 403


def test_a_building_opens_floor_by_floor(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        raise_alarm(conn, "gas-3")
        set_device_state(conn, "gas-2", online=False, status_at=datetime.now(UTC) - timedelta(minutes=5))
    admin = session(env, "admin")
    page = admin.get("/map/buildings/s2?lang=en")
    assert page.status_code == 200
    text = page.text
    # the shop on floor 1 first, then the building's own devices (no floor recorded)
    assert text.index('id="floor-1"') < text.index('id="floor-none"')
    assert re.search(r'class="device sev-critical" data-device="gas-3".*gas leak', text, re.S)
    assert re.search(r'class="device offline" data-device="gas-2"', text)
    assert "Tea house" in text and "Block 2" in text and "Gas detector" in text and "kitchen" in text
    assert "燃气探测器" in admin.get("/map/buildings/s2?lang=zh-CN").text
    cadmin = session(env, "cadmin")
    assert cadmin.get("/map/buildings/s9").status_code == 404
    assert cadmin.get("/map/buildings/nope").status_code == 404
    assert cadmin.get("/map/buildings/..%2F..%2Fetc").status_code in (404, 422)
    assert cadmin.get("/map/buildings/" + "x" * 65).status_code == 422


PNG = png(8, 6)
JPEG = jpeg(8, 6)


def test_floor_plans_upload_show_and_stay_in_scope(env: ApiEnv) -> None:
    h = env.headers("admin")
    url = "/api/v1/admin/floor-plans/s2/1"
    assert env.client.put(url, content=PNG, headers={**h, "Content-Type": "image/png"}).status_code == 204
    admin = session(env, "admin")
    page = admin.get("/map/buildings/s2?lang=en").text
    assert '<img class="floor-plan" src="/map/buildings/s2/floors/1/plan"' in page
    image = admin.get("/map/buildings/s2/floors/1/plan")
    assert image.status_code == 200 and image.content == PNG and image.headers["content-type"] == "image/png"
    # replaced by a JPEG; the type comes from the bytes, not the header
    assert env.client.put(url, content=JPEG, headers={**h, "Content-Type": "image/png"}).status_code == 204
    assert admin.get("/map/buildings/s2/floors/1/plan").headers["content-type"] == "image/jpeg"
    # scope: a worker of another micro-grid, another community's admin; unknown buildings and floors
    assert session(env, "w1").get("/map/buildings/s2/floors/1/plan").status_code == 404
    assert session(env, "w2").get("/map/buildings/s2/floors/1/plan").status_code == 200
    assert (
        env.client.put("/api/v1/admin/floor-plans/s9/1", content=PNG, headers=env.headers("cadmin")).status_code == 404
    )
    assert env.client.put("/api/v1/admin/floor-plans/nope/1", content=PNG, headers=h).status_code == 404
    assert admin.get("/map/buildings/s2/floors/2/plan").status_code == 404
    # hostile bodies and places
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert env.client.put(url, content=svg, headers={**h, "Content-Type": "image/svg+xml"}).status_code == 422
    assert env.client.put(url, content=b"", headers=h).status_code == 422
    assert env.client.put(url, content=PNG + b"\x00" * (2 * 1024 * 1024), headers=h).status_code == 413
    assert env.client.put("/api/v1/admin/floor-plans/s2/201", content=PNG, headers=h).status_code == 422
    assert env.client.put(url, content=PNG, headers=env.headers("w2")).status_code == 403
    assert env.client.delete(url, headers=env.headers("c2admin")).status_code == 404
    assert env.client.delete(url, headers=h).status_code == 204
    assert env.client.delete(url, headers=h).status_code == 404
    assert "floor-plan" not in admin.get("/map/buildings/s2").text


def test_a_building_of_another_community_cannot_be_named_to_reach_its_plans(env: ApiEnv) -> None:
    """Building keys are free names shared by every site that gives them: a c2 admin naming c1's building s2 as
    the building of a c2 site must not make c1's floor plans theirs to read, replace or delete."""
    h = env.headers("admin")
    assert (
        env.client.put("/api/v1/admin/floor-plans/s2/1", content=PNG, headers={**h, "Content-Type": "image/png"})
    ).status_code == 204
    c2 = env.headers("c2admin")
    s9 = env.client.get("/api/v1/admin/sites/s9", headers=c2).json()
    body = {**{k: v for k, v in s9.items() if k != "id"}, "merchant_id": None, "building": "s2"}
    r = env.client.put("/api/v1/admin/sites/s20", json=body, headers=c2)
    assert r.status_code == 409, r.text
    assert "s2" in r.json()["detail"]
    # nor through a bulk import of c2
    imported = env.client.post(
        "/api/v1/admin/import",
        content="community: {id: c2, name: Other community}\n"
        "grids: [{id: g9, name: Grid nine, micro_grids: [{id: mg9, name: Micro nine}]}]\n"
        "sites: [{id: s21, kind: storage, micro_grid: mg9, building: s2}]\n",
        headers={**c2, "Content-Type": "application/yaml"},
    )
    assert imported.status_code == 409, imported.text
    other = session(env, "c2admin")
    assert other.get("/map/buildings/s2/floors/1/plan").status_code == 404
    put = env.client.put("/api/v1/admin/floor-plans/s2/1", content=JPEG, headers={**c2, "Content-Type": "image/png"})
    assert put.status_code == 404
    assert env.client.delete("/api/v1/admin/floor-plans/s2/1", headers=c2).status_code == 404
    assert session(env, "admin").get("/map/buildings/s2/floors/1/plan").content == PNG
    # a c2 building of its own name is fine, and the same name inside c1 still groups c1's sites
    assert env.client.put("/api/v1/admin/sites/s20", json={**body, "building": "c2-b1"}, headers=c2).status_code == 200
    # a key two communities shared before the registry refused it: neither limited admin reaches the plans
    with env.conn() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO site (id, micro_grid_id, kind, name, building) VALUES ('s22', 'mg9', 'shop', '', 's2')"
        )
    assert other.get("/map/buildings/s2/floors/1/plan").status_code == 404
    assert env.client.delete("/api/v1/admin/floor-plans/s2/1", headers=c2).status_code == 404
    assert session(env, "cadmin").get("/map/buildings/s2/floors/1/plan").status_code == 404
    assert session(env, "admin").get("/map/buildings/s2/floors/1/plan").content == PNG


def huge_png(side: int) -> bytes:
    """A real PNG of side × side 1-bit pixels, all white: a few hundred KiB that decode to gigabytes."""
    row = b"\x00" + b"\xff" * (side // 8)
    data = zlib.compress(row * side, 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (huge_png(11_000), "pixels"),  # 121 megapixels in 20 KiB: every phone opening the building page chokes
        (b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", "IHDR"),  # a polyglot: PNG magic, then HTML
        (PNG[:-12], "truncated"),  # no IEND
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"<svg onload=alert(1)>" * 4, "JPEG"),
        (b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8 " + b"\x00" * 14, "PNG or JPEG"),
    ],
)
def test_a_floor_plan_is_checked_by_its_structure(env: ApiEnv, body: bytes, why: str) -> None:
    """The bytes are read as an image header (as field photos are), not only their first bytes."""
    h = {**env.headers("admin"), "Content-Type": "image/png"}
    r = env.client.put("/api/v1/admin/floor-plans/s2/1", content=body, headers=h)
    assert r.status_code == 422, r.text
    assert why in r.json()["detail"]
    assert session(env, "admin").get("/map/buildings/s2/floors/1/plan").status_code == 404


def test_a_floor_plan_upload_takes_one_connection(env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's own connection (already held for its credentials) stores the plan: a second one, taken in a
    thread behind no gate, let ten uploads at once hold all ten of the pool's connections and each wait for an
    eleventh, the whole API with them, until the pool's timeout."""
    from api import map_repo

    in_use: list[int] = []
    real = map_repo.put_floor_plan

    def spy(*args: Any, **kwargs: Any) -> None:
        stats = env.pool.get_stats()
        in_use.append(stats["pool_size"] - stats["pool_available"])
        real(*args, **kwargs)

    monkeypatch.setattr(map_repo, "put_floor_plan", spy)
    h = {**env.headers("admin"), "Content-Type": "image/png"}
    assert env.client.put("/api/v1/admin/floor-plans/s2/1", content=PNG, headers=h).status_code == 204
    assert in_use == [1]
    assert session(env, "admin").get("/map/buildings/s2/floors/1/plan").content == PNG
