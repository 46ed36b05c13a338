"""Merchant score through the API: a merchant sees only their own score, tier, trend, ledger, open hazards and
findings; a worker records and closes findings on sites they cover; an admin corrects and lists by tier."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from core.domain import Disposition
from core.settings import Settings
from rules import service as rules_service
from score import service as score_service
from tests.api_helpers import ApiEnv, api_env, raise_alarm


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def test_merchant_reads_own_score_after_a_verified_hazard(env: ApiEnv) -> None:
    h = env.headers("m1")
    start = env.client.get("/api/v1/merchants/m1/score", headers=h).json()
    assert (start["score"], start["tier"]) == (100, "A")
    with env.conn() as conn, conn.transaction():
        hazard = raise_alarm(conn, "smoke-1", "smoke", rule_id="SMK-01")
        open_now = env.client.get("/api/v1/merchants/m1/open", headers=h).json()
        assert open_now == {"merchant_id": "m1", "alarms": [], "findings": []}, "not committed yet"
    assert [a["id"] for a in env.client.get("/api/v1/merchants/m1/open", headers=h).json()["alarms"]] == [hazard]
    with env.conn() as conn, conn.transaction():
        rules_service.resolve(conn, alarm_id=hazard, actor="w1", disposition=Disposition.REAL_HAZARD, note="toaster")
    with env.conn() as conn, conn.transaction():  # the score part's pass, which the resolution's NOTIFY wakes
        score_service.score_resolutions(conn, now=datetime.now(UTC))
    after = env.client.get("/api/v1/merchants/m1/score", headers=h).json()
    ledger = env.client.get("/api/v1/merchants/m1/ledger", headers=h).json()
    assert ledger["items"] and all(e["alarm_id"] == hazard for e in ledger["items"])
    assert after["score"] == 100 + sum(e["points"] for e in ledger["items"]) < 100
    trend = env.client.get("/api/v1/merchants/m1/trend", headers=h).json()
    assert trend["items"][-1]["score"] == after["score"] and trend["next_offset"] is None
    first = env.client.get("/api/v1/merchants/m1/trend?limit=1", headers=h).json()
    assert first["items"] == trend["items"][:1] and first["next_offset"] == (1 if len(trend["items"]) > 1 else None)
    assert env.client.get("/api/v1/merchants/m1/open", headers=h).json()["alarms"] == []
    # m2 cannot see m1, m1 cannot see m2
    assert env.client.get("/api/v1/merchants/m2/score", headers=h).status_code == 404
    assert env.client.get("/api/v1/merchants/m1/ledger", headers=env.headers("m2")).status_code == 404


def test_findings_corrections_and_tiers(env: ApiEnv) -> None:
    w1 = env.headers("w1")
    r = env.client.post(
        "/api/v1/findings", headers=w1, json={"site_id": "s1", "kind": "blocked_exit", "note": "boxes in the exit"}
    )
    assert r.status_code == 201, r.text
    finding = r.json()
    assert (finding["merchant_id"], finding["found_by"], finding["code"]) == ("m1", "w1", "M-D10")
    opened = env.client.get("/api/v1/merchants/m1/open", headers=env.headers("m1")).json()
    assert [f["id"] for f in opened["findings"]] == [finding["id"]]
    unknown = env.client.post("/api/v1/findings", headers=w1, json={"site_id": "s1", "kind": "messy"})
    assert unknown.status_code == 422 and "unknown finding kind" in unknown.json()["detail"]
    no_merchant = env.client.post(
        "/api/v1/findings", headers=env.headers("admin"), json={"site_id": "s2", "kind": "blocked_exit"}
    )
    assert no_merchant.status_code == 409 and "no merchant" in no_merchant.json()["detail"]
    closed = env.client.post(f"/api/v1/findings/{finding['id']}/close", headers=w1, json={"note": "cleared"})
    assert closed.status_code == 200 and closed.json()["closed_by"] == "w1"
    assert env.client.post(f"/api/v1/findings/{finding['id']}/close", headers=w1, json={}).status_code == 409
    score = env.client.get("/api/v1/merchants/m1/score", headers=w1).json()["score"]

    admin = env.headers("admin")
    fix = env.client.post(
        "/api/v1/admin/merchants/m1/corrections",
        headers=admin,
        json={"reason": "exit was clear on re-check", "points": 3},
    )
    assert fix.status_code == 201 and fix.json()["code"] == "ADJ"
    assert env.client.get("/api/v1/merchants/m1/score", headers=w1).json()["score"] == min(100, score + 3)
    short = env.client.post("/api/v1/admin/merchants/m1/corrections", headers=admin, json={"reason": "ok"})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "body.reason"
    tiers = env.client.get("/api/v1/scores?community=c1&limit=1", headers=admin).json()
    assert sum(tiers["tiers"].values()) == 2 and len(tiers["items"]) == 1 and tiers["next_offset"] == 1
