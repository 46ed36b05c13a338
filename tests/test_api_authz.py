"""Issue 6, must show 1, and issue 20, must show 1: the authorisation matrix over every route and every role,
generated from the app's routes, and scope that follows the registry's hierarchy.

Every route must be declared below (PUBLIC or EXPECTED, or under the admin prefix); a new route without a
declaration fails, and a declared route that answers a role it should refuse (or answers without
credentials) fails. The principals are an admin of every community (a street office), an admin of one community,
a micro-grid worker, a grid leader, the community duty office, the fire station and a merchant. Run with -s to
print the matrix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from api import auth
from core import actionlink
from core.settings import Settings
from field import drill_service, patrol_service, report_repo, report_service
from field import service as field_service
from field.drill_service import DrillCreate
from field.repo import Scope
from field.schemas import RoundCreate, WorkOrderCreate
from notify import service as notify_service
from score import service as score_service
from tests.api_helpers import HIERARCHY_C2, ApiEnv, api_env, raise_alarm
from tests.field_helpers import jpeg

ALL = frozenset({"admin", "worker", "merchant"})
STAFF = frozenset({"admin", "worker"})
ADMIN = frozenset({"admin"})
ADMIN_PREFIXES = ("/api/v1/admin/",)
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/login"),
    ("POST", "/login"),
    # issue 21: a building's QR link opens the resident report form, no account; the receipt is its own credential
    # (tests/test_field_resident.py has their hostile tests)
    ("GET", "/r/{code}"),
    ("POST", "/r/{code}"),
    ("GET", "/r/receipt/{receipt}"),
    ("POST", "/r/receipt/{receipt}/rating"),
}
EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    # issue 23: the API's description and its counters are not for anyone on the public port (the demo keeps them
    # open; every process serves /metrics on GRIDWATCH_METRICS_PORT on the internal network)
    ("GET", "/metrics"): ADMIN,
    ("GET", "/openapi.json"): ADMIN,
    ("GET", "/docs"): ADMIN,
    ("GET", "/redoc"): ADMIN,
    ("GET", "/api/v1/alarms"): ALL,
    ("GET", "/api/v1/alarms/stream"): ALL,
    ("GET", "/api/v1/alarms/{alarm_id}"): ALL,
    ("GET", "/api/v1/alarms/{alarm_id}/detail"): ALL,
    ("POST", "/api/v1/alarms/{alarm_id}/ack"): STAFF,
    ("POST", "/api/v1/alarms/{alarm_id}/resolve"): STAFF,
    ("GET", "/api/v1/devices"): ALL,
    ("GET", "/api/v1/devices/{device_id}"): ALL,
    ("GET", "/api/v1/devices/{device_id}/readings"): ALL,
    ("GET", "/api/v1/devices/{device_id}/lock"): ALL,
    ("POST", "/api/v1/devices/{device_id}/unlock"): STAFF,
    ("POST", "/api/v1/devices/{device_id}/commands"): STAFF,
    ("POST", "/api/v1/devices/{device_id}/commission"): STAFF,
    ("GET", "/api/v1/devices/{device_id}/commissioning"): ALL,
    ("GET", "/api/v1/me"): ALL,
    ("GET", "/api/v1/merchants/{merchant_id}/score"): ALL,
    ("GET", "/api/v1/merchants/{merchant_id}/trend"): ALL,
    ("GET", "/api/v1/merchants/{merchant_id}/ledger"): ALL,
    ("GET", "/api/v1/merchants/{merchant_id}/open"): ALL,
    ("GET", "/api/v1/scores"): ADMIN,
    ("GET", "/api/v1/board"): STAFF,
    ("POST", "/api/v1/findings"): STAFF,
    ("POST", "/api/v1/findings/{finding_id}/close"): STAFF,
    # pages
    ("GET", "/"): ALL,
    ("POST", "/logout"): ALL,
    ("GET", "/board"): STAFF,
    ("GET", "/board/stream"): STAFF,
    ("POST", "/board/alarms/{alarm_id}/ack"): STAFF,
    ("POST", "/board/alarms/{alarm_id}/resolve"): STAFF,
    ("GET", "/alarms/{alarm_id}"): ALL,
    ("POST", "/alarms/{alarm_id}/finding"): STAFF,
    ("POST", "/alarms/{alarm_id}/ack"): STAFF,
    ("POST", "/alarms/{alarm_id}/resolve"): STAFF,
    ("GET", "/devices/{device_id}"): ALL,
    ("POST", "/devices/{device_id}/unlock"): STAFF,
    ("POST", "/devices/{device_id}/commands"): STAFF,
    ("POST", "/devices/{device_id}/commission"): STAFF,
    ("GET", "/score"): ALL,
    ("GET", "/admin"): ADMIN,
    ("GET", "/reports"): ADMIN,  # issue 22
    ("GET", "/map"): STAFF,  # issue 22
    ("GET", "/map/state"): STAFF,
    ("GET", "/map/stream"): STAFF,
    ("GET", "/map/buildings/{building}"): STAFF,
    ("GET", "/map/buildings/{building}/floors/{floor}/plan"): STAFF,
    # issue 21: the work on foot (a merchant sees and reports fixed its own orders; staff open and re-inspect)
    ("GET", "/api/v1/checklists"): ALL,
    ("GET", "/api/v1/work-orders"): ALL,
    ("POST", "/api/v1/work-orders"): STAFF,
    ("GET", "/api/v1/work-orders/{order_id}"): ALL,
    ("POST", "/api/v1/work-orders/{order_id}/fixed"): ALL,
    ("POST", "/api/v1/work-orders/{order_id}/reinspection"): STAFF,
    ("POST", "/api/v1/work-orders/{order_id}/photos"): ALL,
    ("GET", "/api/v1/work-orders/{order_id}/photos/{photo_id}"): ALL,
    ("GET", "/work-orders"): ALL,
    ("POST", "/work-orders"): STAFF,
    ("GET", "/work-orders/{order_id}"): ALL,
    ("POST", "/work-orders/{order_id}/fixed"): ALL,
    ("POST", "/work-orders/{order_id}/reinspection"): STAFF,
    ("POST", "/work-orders/{order_id}/photos"): ALL,
    ("POST", "/api/v1/patrol-rounds"): STAFF,
    ("GET", "/api/v1/patrol-rounds"): STAFF,
    ("GET", "/api/v1/patrol-rounds/{round_id}"): STAFF,
    ("POST", "/api/v1/patrol-rounds/{round_id}/stops/{stop_id}/check-in"): STAFF,
    ("GET", "/api/v1/patrol-coverage"): STAFF,
    ("GET", "/patrols"): STAFF,
    ("POST", "/patrols"): STAFF,
    ("GET", "/patrols/{round_id}"): STAFF,
    ("POST", "/patrols/{round_id}/stops/{stop_id}"): STAFF,
    ("GET", "/api/v1/resident-reports"): STAFF,
    ("GET", "/api/v1/resident-reports/{report_id}"): STAFF,
    ("POST", "/api/v1/resident-reports/{report_id}/take"): STAFF,
    ("POST", "/api/v1/resident-reports/{report_id}/close"): STAFF,
    ("POST", "/api/v1/resident-reports/{report_id}/work-order"): STAFF,
    ("GET", "/api/v1/resident-reports/{report_id}/photos/{photo_id}"): STAFF,
    ("GET", "/api/v1/resident-links"): STAFF,
    ("GET", "/resident-reports"): STAFF,
    ("GET", "/resident-reports/codes"): STAFF,
    ("GET", "/resident-reports/{report_id}"): STAFF,
    ("POST", "/resident-reports/{report_id}/take"): STAFF,
    ("POST", "/resident-reports/{report_id}/close"): STAFF,
    ("POST", "/resident-reports/{report_id}/work-order"): STAFF,
    ("POST", "/api/v1/merchants/{merchant_id}/trainings"): STAFF,
    ("GET", "/api/v1/merchants/{merchant_id}/trainings"): ALL,
    ("GET", "/merchants/{merchant_id}/trainings"): ALL,
    ("POST", "/merchants/{merchant_id}/trainings"): STAFF,
    ("GET", "/api/v1/drills"): STAFF,
    ("POST", "/api/v1/patrol-rounds/{round_id}/stops/{stop_id}/photos"): STAFF,
    ("GET", "/api/v1/patrol-rounds/{round_id}/photos/{photo_id}"): STAFF,
    ("POST", "/patrols/{round_id}/stops/{stop_id}/photos"): STAFF,
    ("GET", "/api/v1/drills/{drill_id}"): STAFF,
    ("POST", "/api/v1/drills/{drill_id}/{step}"): STAFF,
    ("GET", "/drills"): STAFF,
    ("POST", "/drills"): ADMIN,
    ("GET", "/drills/{drill_id}"): STAFF,
    ("POST", "/drills/{drill_id}/{step}"): STAFF,
}
# Column -> (principal, the token role it has). Every one of them has the seeded objects in scope.
PRINCIPALS = {
    "admin": ("admin", "admin"),
    "community admin": ("cadmin", "admin"),
    "micro-grid worker": ("w1", "worker"),
    "grid leader": ("lead1", "worker"),
    "community duty": ("duty1", "worker"),
    "fire station": ("fire1", "worker"),
    "merchant": ("m1", "merchant"),
}
ITEM_IDS = {
    "communities": "c1",
    "grids": "g1",
    "micro-grids": "mg1",
    "workers": "w1",
    "merchants": "m1",
    "sites": "s1",
    "devices": "gas-1",
}
STREAMS = {"/api/v1/alarms/stream", "/board/stream", "/map/stream"}
# The signed link in every message (core/actionlink.py): the link itself is the credential, for one alarm, resident
# report, drill or work order; a token or session neither adds nor takes away anything. Their own hostile tests are
# in tests/test_alarm_links.py and tests/test_field_links.py.
LINK_ROUTES = {
    ("GET", "/alarms/{alarm_id}/link/{key}"),
    ("POST", "/alarms/{alarm_id}/link/{key}/ack"),
    ("POST", "/alarms/{alarm_id}/link/{key}/resolve"),
    ("GET", "/resident-reports/{report_id}/link/{key}"),
    ("POST", "/resident-reports/{report_id}/link/{key}/take"),
    ("POST", "/resident-reports/{report_id}/link/{key}/close"),
    ("POST", "/resident-reports/{report_id}/link/{key}/work-order"),
    ("GET", "/resident-reports/{report_id}/link/{key}/photos/{photo_id}"),
    ("GET", "/drills/{drill_id}/link/{key}"),
    ("POST", "/drills/{drill_id}/link/{key}/{step}"),
    ("GET", "/work-orders/{order_id}/link/{key}"),
    ("POST", "/work-orders/{order_id}/link/{key}/fixed"),
    ("POST", "/work-orders/{order_id}/link/{key}/reinspection"),
    ("POST", "/work-orders/{order_id}/link/{key}/photos"),
    ("GET", "/work-orders/{order_id}/link/{key}/photos/{photo_id}"),
}
# Each kind of item has its own key (the subject is signed) and a resident report its own photos.
LINK_KEYS = {"alarms": "key", "resident-reports": "report_key", "drills": "drill_key", "work-orders": "order_key"}


def expected_roles(method: str, path: str) -> frozenset[str] | None:
    if (method, path) in EXPECTED:
        return EXPECTED[(method, path)]
    if path.startswith(ADMIN_PREFIXES):
        return ADMIN
    return None


def routes(env: ApiEnv) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, including routers included with a prefix."""
    found: list[tuple[str, str]] = []

    def add(path: str, methods: set[str] | None) -> None:
        found.extend((m, path) for m in sorted((methods or set()) - {"HEAD", "OPTIONS"}))

    for route in env.app.routes:
        contexts = getattr(route, "effective_route_contexts", None)  # FastAPI >= 0.13x: included routers
        if contexts is not None:
            for ctx in contexts():
                add(ctx.path, getattr(ctx.original_route, "methods", None))
        elif hasattr(route, "methods"):
            add(route.path, route.methods)  # type: ignore[attr-defined]
    return found


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded, hierarchy=True) as e:
        yield e


def fill(env: ApiEnv, path: str, ids: dict[str, object]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "item_id":
            kind = path.split("/")[4]
            return ITEM_IDS[kind]
        if name == "key":
            return str(ids[LINK_KEYS[path.split("/")[1]]])
        if name == "photo_id" and path.startswith("/resident-reports/"):
            return str(ids["report_photo_id"])
        return str(ids[name])

    url = re.sub(r"\{(\w+)\}", one, path)
    if path in STREAMS:
        url += "?max_s=0.2"
    return url


def seed(env: ApiEnv) -> dict[str, object]:
    key = env.settings.secret_key.get_secret_value()
    with env.conn() as conn, conn.transaction():
        alarm_id = raise_alarm(conn, "gas-1")
        spare, _, _ = auth.create_token_row(conn, secret_key=key, role="admin", label="spare", communities=["c1"])
        silence = notify_service.create_silence(
            conn,
            site_id="s2",
            device_id=None,
            minutes=60,
            reason="works",
            created_by="admin",
            include_life_safety=False,
            now=datetime.now(UTC),
        )
        finding = score_service.record_finding(conn, site_id="s1", kind="blocked_exit", actor="w1")
        order = field_service.open_work_order(
            conn, body=WorkOrderCreate(site_id="s1", kind="illegal_wiring"), actor="w1", scope=Scope()
        )
        photo = field_service.add_photo(conn, order_id=order.id, data=jpeg(), stage="found", actor="w1", scope=Scope())
        patrol = patrol_service.create_round(conn, body=RoundCreate(micro_grid_id="mg1"), actor="w1", scope=Scope())
        drill = drill_service.dispatch(conn, body=DrillCreate(micro_grid_id="mg1"), actor="admin", communities=None)
        report = report_service.submit_report(
            conn, secret=key, code=report_service.link_code(key, "s1"), what="boxes", client="seed", photo=jpeg()
        )
        (report_photo,) = report_repo.photo_ids(conn, report_id=report.report_id)

    def link(subject: actionlink.Subject, item_id: int) -> str:
        return actionlink.sign(
            key, subject=subject, subject_id=item_id, kind="worker", recipient_id="w1", issued_at=datetime.now(UTC)
        )

    return {
        "alarm_id": alarm_id,
        "device_id": "gas-1",
        "merchant_id": "m1",
        "token_id": spare,
        "silence_id": silence.id,
        "finding_id": finding.id,
        "order_id": order.id,
        "photo_id": photo.id,
        "round_id": patrol.round.id,
        "stop_id": patrol.stops[0].id,
        "report_id": report.report_id,
        "drill_id": drill.id,
        "step": "ack",
        "community_id": "c1",
        "grid_id": "g1",
        "building": "s1",
        "floor": 1,
        "key": link("alarm", alarm_id),
        "report_key": link("resident_report", report.report_id),
        "drill_key": link("drill", drill.id),
        "order_key": link("work_order", order.id),
        "report_photo_id": report_photo,
    }


def call(env: ApiEnv, method: str, url: str, who: str | None) -> int:
    return env.client.request(method, url, headers=env.headers(who), follow_redirects=False).status_code


def link_row(env: ApiEnv, method: str, path: str, ids: dict[str, object], failures: list[str]) -> str:
    """A link route answers the same with or without a token; a valid link opens its page without one (its forms
    need the page's CSRF token, so a bare POST is 403)."""
    url = fill(env, path, ids)
    anon = call(env, method, url, None)
    want = 200 if method == "GET" else 403
    if anon != want:
        failures.append(f"{method} {path} with a valid link and no credentials: {anon}, want {want}")
    cells = [str(anon)]
    for column, (principal, _role) in PRINCIPALS.items():
        status = call(env, method, url, principal)
        cells.append(str(status))
        if status != anon:
            failures.append(f"{method} {path} as {column}: {status}; a token must change nothing on a link ({anon})")
    return f"| {method} {path} | the link's recipient | " + " | ".join(cells) + " |"


def test_every_route_declares_its_roles_and_enforces_them(env: ApiEnv) -> None:
    ids = seed(env)
    declared = {(m, p) for m, p in routes(env)}
    openapi = {(m.upper(), p) for p, ops in env.app.openapi()["paths"].items() for m in ops}
    assert openapi <= declared, "every OpenAPI operation is a route"
    undeclared = sorted(
        r for r in declared - PUBLIC - LINK_ROUTES if expected_roles(*r) is None and not r[1].startswith("/static")
    )
    assert not undeclared, f"new routes need an authorisation expectation in this test: {undeclared}"

    rows, failures = [], []
    for method, path in sorted(declared):
        if (method, path) in PUBLIC or path.startswith("/static"):
            continue
        if (method, path) in LINK_ROUTES:
            rows.append(link_row(env, method, path, ids, failures))
            continue
        roles = expected_roles(method, path)
        assert roles is not None
        url = fill(env, path, ids)
        anon = call(env, method, url, None)
        is_page = not path.startswith(("/api/", "/metrics", "/openapi.json"))
        want_anon = 303 if is_page and method == "GET" else 401
        if anon != want_anon:
            failures.append(f"{method} {path} without credentials: {anon}, want {want_anon}")
        cells = [str(anon)]
        for column, (principal, role) in PRINCIPALS.items():
            status = call(env, method, url, principal)
            cells.append(str(status))
            if role in roles and status in (401, 403):
                failures.append(f"{method} {path} as {column}: {status}, but {role} is allowed")
            if role not in roles and status != 403:
                failures.append(f"{method} {path} as {column}: {status}, want 403")
        rows.append(f"| {method} {path} | {', '.join(sorted(roles))} | " + " | ".join(cells) + " |")
    print("\n| route | allowed | none | " + " | ".join(PRINCIPALS) + " |\n" + "|---" * (len(PRINCIPALS) + 3) + "|")
    print("\n".join(rows))
    assert not failures, "\n".join(failures)
    assert len(rows) >= 60


def test_out_of_scope_objects_are_404_not_403(env: ApiEnv) -> None:
    """A worker of another micro-grid and another merchant cannot tell that the object exists."""
    ids = seed(env)
    a = ids["alarm_id"]
    for who in ("w2", "m2"):
        h = env.headers(who)
        assert env.client.get(f"/api/v1/alarms/{a}", headers=h).status_code == 404
        assert env.client.get(f"/api/v1/alarms/{a}/detail", headers=h).status_code == 404
        assert env.client.get("/api/v1/devices/gas-1", headers=h).status_code == 404
        assert env.client.get("/api/v1/devices/gas-1/readings", headers=h).status_code == 404
        assert env.client.get("/api/v1/merchants/m1/score", headers=h).status_code == 404
        assert env.client.get("/api/v1/merchants/m1/ledger", headers=h).status_code == 404
        assert env.client.get(f"/alarms/{a}", headers=h).status_code == 404
        assert env.client.get("/devices/gas-1", headers=h).status_code == 404
    h = env.headers("w2")
    assert env.client.post(f"/api/v1/alarms/{a}/ack", headers=h).status_code == 404
    assert env.client.post(f"/api/v1/alarms/{a}/resolve", headers=h, json={"disposition": "test"}).status_code == 404
    assert (
        env.client.post("/api/v1/findings", headers=h, json={"site_id": "s1", "kind": "blocked_exit"}).status_code
        == 404
    )
    assert env.client.post(f"/api/v1/findings/{ids['finding_id']}/close", headers=h, json={}).status_code == 404
    assert env.client.get("/api/v1/devices/gas-1/lock", headers=h).status_code == 404
    assert env.client.post("/api/v1/devices/gas-1/unlock", headers=h, json={"note": "x"}).status_code == 404
    assert env.client.post("/api/v1/devices/gas-1/commands", headers=h, json={"action": "self_test"}).status_code == 404
    # and what is in scope answers
    assert env.client.get(f"/api/v1/alarms/{a}", headers=env.headers("w1")).status_code == 200
    assert env.client.get(f"/api/v1/alarms/{a}", headers=env.headers("m1")).status_code == 200
    assert env.client.get("/api/v1/merchants/m1/score", headers=env.headers("w1")).status_code == 200
    assert env.client.get("/api/v1/merchants/m2/score", headers=env.headers("m2")).status_code == 200
    # a worker covering mg2 sees m2 (site s3 in mg2), not m1
    assert env.client.get("/api/v1/merchants/m2/score", headers=env.headers("w2")).status_code == 200


def test_revoked_and_expired_tokens_are_refused(env: ApiEnv) -> None:
    key = env.settings.secret_key.get_secret_value()
    with psycopg.connect(env.settings.dsn) as conn, conn.transaction():
        short = auth.create_token(conn, secret_key=key, role="worker", worker_id="w1", ttl=timedelta(seconds=-1))
    r = env.client.get("/api/v1/alarms", headers={"Authorization": f"Bearer {short}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    r = env.client.get("/api/v1/alarms", headers={"Authorization": "Bearer gw_nonsense"})
    assert r.status_code == 401 and "unknown" in r.json()["detail"]
    made = env.client.post(
        "/api/v1/admin/tokens",
        headers=env.headers("admin"),
        json={"role": "merchant", "merchant_id": "m1", "label": "shop phone", "days": 30},
    )
    assert made.status_code == 201
    token = made.json()["token"]
    assert env.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["merchant_id"] == "m1"
    assert (
        env.client.delete(f"/api/v1/admin/tokens/{made.json()['id']}", headers=env.headers("admin")).status_code == 200
    )
    r = env.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert (
        env.client.delete(f"/api/v1/admin/tokens/{made.json()['id']}", headers=env.headers("admin")).status_code == 409
    )
    with psycopg.connect(env.settings.dsn) as conn:
        stored = conn.execute("SELECT token_hash FROM api_token WHERE id = %s", (made.json()["id"],)).fetchone()
    assert stored is not None and token.encode() not in bytes(stored[0]), "only the digest is stored"
    listed = env.client.get("/api/v1/admin/tokens?limit=2", headers=env.headers("admin")).json()
    assert len(listed["items"]) == 2 and listed["next_offset"] == 2
    assert all("token" not in item for item in listed["items"])


def seed_hierarchy_alarms(env: ApiEnv) -> dict[str, int]:
    """One open alarm per micro-grid of the hierarchy: gas-1 (mg1, g1), gas-2 (mg2, g1), gas-4 (mg3, g2) in c1 and
    gas-9 (mg9, g9) in c2."""
    with env.conn() as conn, conn.transaction():
        return {device: raise_alarm(conn, device) for device in ("gas-1", "gas-2", "gas-4", "gas-9")}


def visible(env: ApiEnv, who: str, path: str = "/api/v1/alarms") -> set[object]:
    r = env.client.get(path, headers=env.headers(who))
    assert r.status_code == 200, r.text
    key = "device_id" if path == "/api/v1/alarms" else "id"
    return {item[key] for item in r.json()["items"]}


def test_scope_follows_the_registry_hierarchy(env: ApiEnv) -> None:
    """A micro-grid worker sees their micro-grids, a grid leader every micro-grid of their grids, the duty office
    and the fire station their whole community, a community's admin that community, a street office's admin
    everything; a merchant only their own sites."""
    seed_hierarchy_alarms(env)
    c1 = {"gas-1", "gas-2", "gas-4"}
    expected = {
        "w1": {"gas-1"},
        "w2": {"gas-2"},
        "lead1": {"gas-1", "gas-2"},
        "lead2": {"gas-4"},
        "duty1": c1,
        "fire1": c1,
        "w9": {"gas-9"},
        "duty2": {"gas-9"},
        "cadmin": c1,
        "c2admin": {"gas-9"},
        "admin": c1 | {"gas-9"},
        "m1": {"gas-1"},
        "m9": {"gas-9"},
    }
    for who, devices in expected.items():
        assert visible(env, who) == devices, f"alarms {who} sees"
        seen = visible(env, who, "/api/v1/devices") - {"smoke-1", "gas-3"}  # neighbours in the same sites/grids
        assert seen == devices, f"devices {who} sees"
    # merchants: a leader sees the merchants with a site in their grids, the duty office those of the community
    for who, merchant, status in (
        ("lead1", "m1", 200),
        ("lead2", "m1", 404),
        ("duty1", "m1", 200),
        ("duty1", "m9", 404),
        ("fire1", "m2", 200),
        ("duty2", "m9", 200),
        ("cadmin", "m9", 404),
        ("c2admin", "m9", 200),
    ):
        assert env.client.get(f"/api/v1/merchants/{merchant}/score", headers=env.headers(who)).status_code == status
    me = env.client.get("/api/v1/me", headers=env.headers("lead1")).json()
    assert me["worker_role"] == "grid_leader" and me["communities"] is None
    assert env.client.get("/api/v1/me", headers=env.headers("cadmin")).json()["communities"] == ["c1"]


def test_a_leader_acknowledges_in_their_grid_and_not_in_another(env: ApiEnv) -> None:
    alarms = seed_hierarchy_alarms(env)
    lead1 = env.headers("lead1")
    r = env.client.post(f"/api/v1/alarms/{alarms['gas-2']}/ack", headers=lead1)
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "lead1"
    assert env.client.post(f"/api/v1/alarms/{alarms['gas-4']}/ack", headers=lead1).status_code == 404
    assert env.client.get(f"/alarms/{alarms['gas-4']}", headers=lead1).status_code == 404
    assert env.client.post(f"/board/alarms/{alarms['gas-4']}/ack", headers=lead1).status_code == 404
    r = env.client.post(f"/api/v1/alarms/{alarms['gas-4']}/ack", headers=env.headers("lead2"))
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "lead2"
    # the community's duty office and fire station act on any alarm of their community, not another's
    r = env.client.post(
        f"/api/v1/alarms/{alarms['gas-1']}/resolve", headers=env.headers("fire1"), json={"disposition": "test"}
    )
    assert r.status_code == 200 and r.json()["closed_by"] == "fire1"
    assert env.client.post(f"/api/v1/alarms/{alarms['gas-9']}/ack", headers=env.headers("duty1")).status_code == 404
    assert env.client.post(f"/api/v1/alarms/{alarms['gas-9']}/ack", headers=env.headers("duty2")).status_code == 200
    # the leader's board lists the alarms of both micro-grids of their grid
    board = env.client.get("/board", headers=lead1).text
    assert f"alarm-{alarms['gas-2']}" in board and f"alarm-{alarms['gas-4']}" not in board


def test_alarms_follow_their_site_when_it_moves(env: ApiEnv) -> None:
    """Scope is the site's current micro-grid, not the one recorded when the alarm was raised."""
    alarms = seed_hierarchy_alarms(env)
    a2 = alarms["gas-2"]
    assert env.client.get(f"/api/v1/alarms/{a2}", headers=env.headers("w2")).status_code == 200
    moved = env.client.put(
        "/api/v1/admin/sites/s2",
        headers=env.headers("admin"),
        json={"micro_grid_id": "mg3", "kind": "building", "name": "Block 2", "address": "2 Lane"},
    )
    assert moved.status_code == 200
    assert env.client.get(f"/api/v1/alarms/{a2}", headers=env.headers("w2")).status_code == 404
    assert env.client.post(f"/api/v1/alarms/{a2}/ack", headers=env.headers("lead1")).status_code == 404
    assert env.client.post(f"/api/v1/alarms/{a2}/ack", headers=env.headers("lead2")).status_code == 200


def test_a_community_admin_cannot_see_or_touch_another_community(env: ApiEnv) -> None:
    alarms = seed_hierarchy_alarms(env)
    h = env.headers("cadmin")
    get = lambda path: env.client.get(path, headers=h)  # noqa: E731
    # registry: another community's objects are not found; lists hold only c1's
    for path in (
        "communities/c2",
        "grids/g9",
        "micro-grids/mg9",
        "workers/w9",
        "merchants/m9",
        "sites/s9",
        "devices/gas-9",
    ):
        assert get(f"/api/v1/admin/{path}").status_code == 404, path
        assert env.client.get(f"/api/v1/admin/{path}", headers=env.headers("admin")).status_code == 200, path
    assert {c["id"] for c in get("/api/v1/admin/communities").json()["items"]} == {"c1"}
    assert "w9" not in {w["id"] for w in get("/api/v1/admin/workers").json()["items"]}
    assert "gas-9" not in {d["id"] for d in get("/api/v1/admin/devices?limit=500").json()["items"]}
    # KPIs
    assert get("/api/v1/admin/kpis/communities/c2").status_code == 404
    assert get("/api/v1/admin/kpis/grids/g9").status_code == 404
    assert get("/api/v1/admin/kpis/communities/c1").json()["alarms"] == 3
    assert env.client.get("/api/v1/admin/kpis/communities/c2", headers=env.headers("c2admin")).json()["alarms"] == 1
    # alarms, merchants, scores
    assert get(f"/api/v1/alarms/{alarms['gas-9']}").status_code == 404
    assert get("/api/v1/merchants/m9/score").status_code == 404
    assert {m["merchant_id"] for m in get("/api/v1/scores").json()["items"]} == {"m1", "m2"}
    assert get("/api/v1/scores?community=c2").status_code == 404
    # tokens: another community's workers', merchants' and admins' tokens, and unlimited admin tokens, are unseen
    listed = get("/api/v1/admin/tokens?limit=500").json()["items"]
    subjects = {(t["role"], t["worker_id"] or t["merchant_id"] or ",".join(t["communities"] or ["*"])) for t in listed}
    assert ("worker", "w1") in subjects and ("admin", "c1") in subjects
    assert not {("worker", "w9"), ("worker", "duty2"), ("merchant", "m9"), ("admin", "c2"), ("admin", "*")} & subjects
    everything = env.client.get("/api/v1/admin/tokens?limit=500", headers=env.headers("admin")).json()["items"]
    c2_tokens = [t["id"] for t in everything if t["worker_id"] == "w9" or t["communities"] == ["c2"]]
    unlimited = [t["id"] for t in everything if t["role"] == "admin" and t["communities"] is None]
    for token_id in c2_tokens + unlimited:
        assert env.client.delete(f"/api/v1/admin/tokens/{token_id}", headers=h).status_code == 404
    # silences
    made = env.client.post(
        "/api/v1/admin/silences",
        headers=env.headers("c2admin"),
        json={"site_id": "s9", "ends_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
    )
    assert made.status_code == 201
    assert made.json()["id"] not in {s["id"] for s in get("/api/v1/admin/silences").json()["items"]}
    assert env.client.delete(f"/api/v1/admin/silences/{made.json()['id']}", headers=h).status_code == 404
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = env.client.post("/api/v1/admin/silences", headers=h, json={"site_id": "s9", "ends_at": future})
    assert r.status_code == 422 and "does not exist" in r.json()["detail"]
    assert (
        env.client.post("/api/v1/admin/silences", headers=h, json={"site_id": "s1", "ends_at": future}).status_code
        == 201
    )
    # writes: another community is refused whether it exists or not; its objects are not found
    assert env.client.put("/api/v1/admin/communities/c2", headers=h, json={"name": "x"}).status_code == 403
    assert env.client.put("/api/v1/admin/communities/c7", headers=h, json={"name": "x"}).status_code == 403
    assert env.client.put("/api/v1/admin/communities/c1", headers=h, json={"name": "Renamed"}).status_code == 200
    r = env.client.put("/api/v1/admin/grids/g10", headers=h, json={"community_id": "c2", "name": "x"})
    assert r.status_code == 422 and "does not exist" in r.json()["detail"]
    worker = {"community_id": "c1", "name": "x", "role": "micro_grid_worker", "micro_grids": ["mg9"]}
    r = env.client.put("/api/v1/admin/workers/w10", headers=h, json=worker)
    assert r.status_code == 422 and "mg9" in r.json()["detail"]
    r = env.client.put("/api/v1/admin/workers/w9", headers=h, json=worker | {"micro_grids": ["mg1"]})
    assert r.status_code == 404, "taking over another community's worker"
    assert env.client.delete("/api/v1/admin/sites/s9", headers=h).status_code == 404
    r = env.client.post(
        "/api/v1/admin/import", headers=h | {"Content-Type": "application/yaml"}, content=HIERARCHY_C2.encode()
    )
    assert r.status_code == 403
    # tokens it makes stay inside c1
    make = lambda body: env.client.post("/api/v1/admin/tokens", headers=h, json=body)  # noqa: E731
    assert make({"role": "worker", "worker_id": "w9"}).status_code == 404
    assert make({"role": "merchant", "merchant_id": "m9"}).status_code == 404
    assert make({"role": "admin"}).status_code == 403
    assert make({"role": "admin", "communities": ["c1", "c2"]}).status_code == 403
    assert make({"role": "worker", "worker_id": "w1", "communities": ["c1"]}).status_code == 422
    made_admin = make({"role": "admin", "communities": ["c1"], "label": "deputy"})
    assert made_admin.status_code == 201 and made_admin.json()["communities"] == ["c1"]
    deputy = {"Authorization": f"Bearer {made_admin.json()['token']}"}
    assert env.client.get("/api/v1/admin/communities/c2", headers=deputy).status_code == 404
    assert make({"role": "worker", "worker_id": "lead2"}).status_code == 201
    # the admin page shows c1's KPIs only
    page = get("/admin").text
    assert "c1" in page and "c2" not in page and "g9" not in page


def test_token_create_command_limits_an_admin_to_communities(env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app.cli import app as cli_app

    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", env.settings.dsn)
    monkeypatch.setenv("GRIDWATCH_SECRET_KEY", env.settings.secret_key.get_secret_value())
    monkeypatch.setenv("GRIDWATCH_MQTT_URL", env.settings.mqtt_url or "")
    result = CliRunner().invoke(cli_app, ["token", "create", "--role", "admin", "--community", "c2"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    me = env.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["role"] == "admin" and me["communities"] == ["c2"]
    assert (
        env.client.get("/api/v1/admin/communities/c1", headers={"Authorization": f"Bearer {token}"}).status_code == 404
    )
    bad = CliRunner().invoke(cli_app, ["token", "create", "--role", "worker", "--worker", "w1", "--community", "c1"])
    assert bad.exit_code != 0


def test_the_live_stream_follows_the_same_scope(env: ApiEnv) -> None:
    """A grid leader's and a community admin's streams carry the alarms of their scope, and no others."""
    for who, shown, hidden in (
        ("lead2", {"gas-4"}, {"gas-1", "gas-9"}),
        ("cadmin", {"gas-1", "gas-4"}, {"gas-9"}),
        ("duty2", {"gas-9"}, {"gas-1", "gas-4"}),
    ):
        with env.client.stream("GET", "/api/v1/alarms/stream?max_s=2", headers=env.headers(who)) as stream:
            seed_hierarchy_alarms(env)
            text = "".join(stream.iter_text())
        devices = set(re.findall(r'"device_id":\s*"([^"]+)"', text))
        assert shown <= devices and not hidden & devices, (who, devices)
        with env.conn() as conn, conn.transaction():
            conn.execute("UPDATE alarm SET closed_at = now(), closed_by = 'test', disposition = 'test'")
