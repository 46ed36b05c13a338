"""Issue 6, must show 1: the authorisation matrix over every route and role, generated from the app's routes.

Every route must be declared below (PUBLIC or EXPECTED, or under the admin prefix); a new route without a
declaration fails, and a declared route that answers a role it should refuse (or answers without
credentials) fails. Run with -s to print the matrix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from api import auth
from core.settings import Settings
from notify import service as notify_service
from score import service as score_service
from tests.api_helpers import ApiEnv, api_env, raise_alarm

ALL = frozenset({"admin", "worker", "merchant"})
STAFF = frozenset({"admin", "worker"})
ADMIN = frozenset({"admin"})
ADMIN_PREFIXES = ("/api/v1/admin/",)
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
EXPECTED: dict[tuple[str, str], frozenset[str]] = {
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
    ("GET", "/devices/{device_id}"): ALL,
    ("POST", "/devices/{device_id}/unlock"): STAFF,
    ("POST", "/devices/{device_id}/commands"): STAFF,
    ("POST", "/devices/{device_id}/commission"): STAFF,
    ("GET", "/score"): ALL,
    ("GET", "/admin"): ADMIN,
}
PRINCIPAL = {"admin": "admin", "worker": "w1", "merchant": "m1"}
ITEM_IDS = {
    "communities": "c1",
    "grids": "g1",
    "micro-grids": "mg1",
    "workers": "w1",
    "merchants": "m1",
    "sites": "s1",
    "devices": "gas-1",
}
STREAMS = {"/api/v1/alarms/stream", "/board/stream"}


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
    with api_env(loaded) as e:
        yield e


def fill(env: ApiEnv, path: str, ids: dict[str, object]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "item_id":
            kind = path.split("/")[4]
            return ITEM_IDS[kind]
        return str(ids[name])

    url = re.sub(r"\{(\w+)\}", one, path)
    if path in STREAMS:
        url += "?max_s=0.2"
    return url


def seed(env: ApiEnv) -> dict[str, object]:
    key = env.settings.secret_key.get_secret_value()
    with env.conn() as conn, conn.transaction():
        alarm_id = raise_alarm(conn, "gas-1")
        spare, _, _ = auth.create_token_row(conn, secret_key=key, role="admin", label="spare")
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
    return {
        "alarm_id": alarm_id,
        "device_id": "gas-1",
        "merchant_id": "m1",
        "token_id": spare,
        "silence_id": silence.id,
        "finding_id": finding.id,
        "community_id": "c1",
        "grid_id": "g1",
    }


def call(env: ApiEnv, method: str, url: str, who: str | None) -> int:
    return env.client.request(method, url, headers=env.headers(who), follow_redirects=False).status_code


def test_every_route_declares_its_roles_and_enforces_them(env: ApiEnv) -> None:
    ids = seed(env)
    declared = {(m, p) for m, p in routes(env)}
    openapi = {(m.upper(), p) for p, ops in env.app.openapi()["paths"].items() for m in ops}
    assert openapi <= declared, "every OpenAPI operation is a route"
    undeclared = sorted(r for r in declared - PUBLIC if expected_roles(*r) is None and not r[1].startswith("/static"))
    assert not undeclared, f"new routes need an authorisation expectation in this test: {undeclared}"

    rows, failures = [], []
    for method, path in sorted(declared):
        if (method, path) in PUBLIC or path.startswith("/static"):
            continue
        roles = expected_roles(method, path)
        assert roles is not None
        url = fill(env, path, ids)
        anon = call(env, method, url, None)
        is_page = not path.startswith("/api/")
        want_anon = 303 if is_page and method == "GET" else 401
        if anon != want_anon:
            failures.append(f"{method} {path} without credentials: {anon}, want {want_anon}")
        cells = [str(anon)]
        for role in ("admin", "worker", "merchant"):
            status = call(env, method, url, PRINCIPAL[role])
            cells.append(str(status))
            if role in roles and status in (401, 403):
                failures.append(f"{method} {path} as {role}: {status}, but {role} is allowed")
            if role not in roles and status != 403:
                failures.append(f"{method} {path} as {role}: {status}, want 403")
        rows.append(f"| {method} {path} | {', '.join(sorted(roles))} | " + " | ".join(cells) + " |")
    print("\n| route | allowed | none | admin | worker | merchant |\n|---|---|---|---|---|---|")
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
