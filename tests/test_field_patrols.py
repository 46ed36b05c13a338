"""Patrol rounds (issue 21, docs/field.md) on the real database through the API: a round's check-list per kind of
place, check-in per stop, failed items becoming work orders, the twice-daily schedule, a door-to-door gas campaign
over a building's households, and coverage (due vs visited, households reached, missed stops)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from core.settings import Settings
from field import patrol_service
from tests.api_helpers import ApiEnv, api_env

SHOP_ITEMS = (
    "ebike_charging_indoors",
    "flammables_in_stairwell",
    "blocked_exit",
    "illegal_wiring",
    "missing_extinguisher",
    "overnight_staff",
    "valve_bypassed",
    "gas_hose_aged",
)
KITCHEN_ITEMS = ("gas_hose_aged", "no_gas_detector", "valve_bypassed", "no_flame_failure")


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded, hierarchy=True) as e:
        yield e


def answers(items: tuple[str, ...], *failed: str) -> dict[str, str]:
    return {i: "fail" if i in failed else "pass" for i in items}


def check_in(env: ApiEnv, who: str, round_id: int, stop_id: int, **body: Any) -> Any:
    return env.client.post(
        f"/api/v1/patrol-rounds/{round_id}/stops/{stop_id}/check-in", headers=env.headers(who), json=body
    )


def test_a_round_checks_in_and_failed_items_become_work_orders(env: ApiEnv) -> None:
    r = env.client.post("/api/v1/patrol-rounds", headers=env.headers("w1"), json={"micro_grid_id": "mg1"})
    assert r.status_code == 201, r.text
    rnd = r.json()
    assert [(s["site_id"], s["checklist"]) for s in rnd["stops"]] == [("s1", "storage_shop")]
    assert [i["code"] for i in rnd["checklists"]["storage_shop"]["items"]] == list(SHOP_ITEMS)
    rid, stop = rnd["round"]["id"], rnd["stops"][0]["id"]
    # every item must be answered, and only the list's items
    partial = check_in(env, "w1", rid, stop, answers={"blocked_exit": "fail"})
    assert partial.status_code == 422 and "missing" in partial.json()["detail"]
    bad = check_in(env, "w1", rid, stop, answers={**answers(SHOP_ITEMS), "made_up": "fail"})
    assert bad.status_code == 422
    assert check_in(env, "w2", rid, stop, answers=answers(SHOP_ITEMS)).status_code == 404, "another micro-grid"
    assert check_in(env, "m1", rid, stop, answers=answers(SHOP_ITEMS)).status_code == 403
    done = check_in(env, "w1", rid, stop, answers=answers(SHOP_ITEMS, "blocked_exit", "gas_hose_aged"), note="back")
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["stop"]["outcome"] == "checked" and result["stop"]["visited_by"] == "w1"
    orders = {o["kind"]: o for o in result["work_orders"]}
    assert set(orders) == {"blocked_exit", "gas_hose_aged"}
    assert all(
        o["source"] == "patrol" and o["patrol_stop_id"] == stop and o["party"] == "merchant" for o in orders.values()
    )
    assert orders["blocked_exit"]["finding_id"] is not None, "a policy kind on a merchant's premises feeds the score"
    assert orders["gas_hose_aged"]["finding_id"] is None, "not a kind of the score policy"
    ledger = env.client.get("/api/v1/merchants/m1/ledger", headers=env.headers("m1")).json()["items"]
    assert [e["code"] for e in ledger] == ["M-D10"]
    assert check_in(env, "w1", rid, stop, answers=answers(SHOP_ITEMS)).status_code == 409, "one check-in per stop"
    assert env.client.get(f"/api/v1/patrol-rounds/{rid}", headers=env.headers("w2")).status_code == 404
    assert env.client.get(f"/api/v1/patrol-rounds/{rid}", headers=env.headers("lead1")).status_code == 200
    assert env.client.get("/api/v1/patrol-rounds", headers=env.headers("m1")).status_code == 403
    mine = env.client.get("/api/v1/patrol-rounds", headers=env.headers("w1")).json()
    assert [(x["id"], x["stops"], x["visited"]) for x in mine] == [(rid, 1, 1)]
    assert env.client.get("/api/v1/patrol-rounds", headers=env.headers("w2")).json() == []


def test_a_gas_campaign_reaches_every_household_and_coverage_counts_them(env: ApiEnv) -> None:
    body = {"kind": "gas_campaign", "site_id": "s2", "floors": 2, "units_per_floor": 2}
    assert env.client.post("/api/v1/patrol-rounds", headers=env.headers("w1"), json=body).status_code == 404
    shop = {"kind": "gas_campaign", "site_id": "s1", "households": ["101"]}
    assert env.client.post("/api/v1/patrol-rounds", headers=env.headers("w1"), json=shop).status_code == 422
    forged = {"kind": "gas_campaign", "site_id": "s2", "households": ["1'; DROP TABLE site; --"]}
    assert env.client.post("/api/v1/patrol-rounds", headers=env.headers("w2"), json=forged).status_code == 422
    r = env.client.post("/api/v1/patrol-rounds", headers=env.headers("w2"), json=body)
    assert r.status_code == 201, r.text
    rnd = r.json()
    stops = {s["household"]: s for s in rnd["stops"]}
    assert list(stops) == ["101", "102", "201", "202"]
    assert {s["checklist"] for s in stops.values()} == {"household_kitchen"}
    rid = rnd["round"]["id"]
    hit = check_in(env, "w2", rid, stops["101"]["id"], answers=answers(KITCHEN_ITEMS, "gas_hose_aged"))
    assert hit.status_code == 200
    (order,) = hit.json()["work_orders"]
    assert (order["party"], order["party_name"], order["site_id"], order["kind"]) == (
        "household",
        "101",
        "s2",
        "gas_hose_aged",
    )
    assert check_in(env, "w2", rid, stops["102"]["id"], outcome="not_home").json()["stop"]["outcome"] == "not_home"
    assert check_in(env, "w2", rid, stops["201"]["id"], answers=answers(KITCHEN_ITEMS)).status_code == 200
    cov = env.client.get("/api/v1/patrol-coverage", headers=env.headers("w2")).json()
    (line,) = cov["lines"]
    assert (line["kind"], line["due"], line["visited"], line["checked"], line["not_home"], line["missed"]) == (
        "gas_campaign",
        4,
        3,
        2,
        1,
        0,
    )
    assert (cov["households_reached"], cov["households_due"], cov["missed"]) == (2, 4, [])
    # after the campaign's end, the door never knocked on is listed as missed
    end = datetime.fromisoformat(rnd["round"]["due_end"])
    with env.conn() as conn:
        from field.repo import Scope

        later = patrol_service.coverage(
            conn, scope=Scope(worker="w2"), since=end - timedelta(days=30), until=end, now=end + timedelta(minutes=1)
        )
    assert [(m.household, m.site_id) for m in later.missed] == [("202", "s2")]
    assert later.lines[0].missed == 1
    assert env.client.get("/api/v1/patrol-coverage", headers=env.headers("w1")).json()["lines"] == []


def test_the_schedule_makes_twice_daily_rounds_and_coverage_lists_the_missed(env: ApiEnv) -> None:
    day = date(2026, 5, 4)
    r = env.client.post(f"/api/v1/admin/patrol-schedule?day={day}", headers=env.headers("c2admin"))
    assert r.status_code == 200 and r.json() == {"created": 2}, "only its own community's micro-grid mg9"
    assert env.client.post(f"/api/v1/admin/patrol-schedule?day={day}", headers=env.headers("w1")).status_code == 403
    with env.conn() as conn, conn.transaction():
        made = patrol_service.schedule_rounds(conn, day=day, tz="Asia/Shanghai")
        again = patrol_service.schedule_rounds(conn, day=day, tz="Asia/Shanghai")
    assert (made, again) == (6, 0), "mg1, mg2, mg3 twice each (mg9's exist); idempotent"
    since, until = "2026-05-04T00:00:00%2B08:00", "2026-05-05T00:00:00%2B08:00"
    rounds = env.client.get(f"/api/v1/patrol-rounds?since={since}&until={until}", headers=env.headers("w1")).json()
    assert [(x["micro_grid_id"], x["due_start"][11:16]) for x in rounds] == [("mg1", "00:00"), ("mg1", "06:00")]
    am = env.client.get(f"/api/v1/patrol-rounds/{rounds[0]['id']}", headers=env.headers("w1")).json()
    assert [(s["seq"], s["site_id"], s["checklist"]) for s in am["stops"]] == [(1, "s1", "storage_shop")]
    assert am["round"]["title"] == "一日双巡 / Twice-daily round mg1 2026-05-04 am"
    assert check_in(env, "w1", am["round"]["id"], am["stops"][0]["id"], answers=answers(SHOP_ITEMS)).status_code == 200
    cov = env.client.get(f"/api/v1/patrol-coverage?since={since}&until={until}", headers=env.headers("lead1")).json()
    (line,) = cov["lines"]
    assert (line["kind"], line["due"], line["visited"], line["missed"]) == ("grid", 6, 1, 5), "mg1: s1; mg2: s2, s3"
    assert sorted((m["site_id"], m["title"][-2:]) for m in cov["missed"]) == [
        ("s1", "pm"),
        ("s2", "am"),
        ("s2", "pm"),
        ("s3", "am"),
        ("s3", "pm"),
    ]
    only = env.client.get(
        f"/api/v1/patrol-coverage?since={since}&until={until}&micro_grid=mg2", headers=env.headers("lead1")
    ).json()
    assert only["lines"][0]["due"] == 4
    naive = env.client.get("/api/v1/patrol-coverage?since=2026-05-04T00:00:00", headers=env.headers("w1"))
    assert naive.status_code == 422
    assert datetime.now(UTC) > datetime(2026, 5, 5, tzinfo=UTC)


def test_a_stop_takes_photos_seen_only_in_scope(env: ApiEnv) -> None:
    from tests.field_helpers import jpeg, png

    rnd = env.client.post("/api/v1/patrol-rounds", headers=env.headers("w1"), json={"micro_grid_id": "mg1"}).json()
    rid, stop = rnd["round"]["id"], rnd["stops"][0]["id"]
    url = f"/api/v1/patrol-rounds/{rid}/stops/{stop}/photos"

    def upload(who: str, data: bytes) -> Any:
        return env.client.post(url, headers=env.headers(who), files={"photo": ("p.jpg", data, "image/jpeg")})

    first = upload("w1", jpeg())
    assert first.status_code == 201, first.text
    photo = first.json()["url"]
    assert upload("w1", b"<svg onload=alert(1)>").status_code == 422
    assert upload("w2", png()).status_code == 404 and upload("m1", png()).status_code == 403
    for _ in range(4):
        assert upload("w1", png()).status_code == 201
    assert upload("w1", png()).status_code == 409, "five per stop"
    assert env.client.get(photo, headers=env.headers("w1")).content == jpeg()
    assert env.client.get(photo, headers=env.headers("lead1")).status_code == 200
    for who in ("w2", "w9", "c2admin"):
        assert env.client.get(photo, headers=env.headers(who)).status_code == 404, who
    assert env.client.get(photo, headers=env.headers("m1")).status_code == 403
    detail = env.client.get(f"/api/v1/patrol-rounds/{rid}", headers=env.headers("w1")).json()
    assert detail["stops"][0]["photos"][0] == photo and len(detail["stops"][0]["photos"]) == 5


def test_a_round_not_yet_due_cannot_be_checked_in(env: ApiEnv) -> None:
    # Review 21: any round in scope took check-ins at any time, so next week's twice-daily rounds could be answered
    # from the office today and coverage would show them walked.
    day = datetime.now(UTC).date() + timedelta(days=7)
    with env.conn() as conn, conn.transaction():
        patrol_service.schedule_rounds(conn, day=day, tz="Asia/Shanghai")
    since = f"{day}T00:00:00%2B08:00"
    (am, _pm) = env.client.get(f"/api/v1/patrol-rounds?since={since}", headers=env.headers("w1")).json()
    stop = env.client.get(f"/api/v1/patrol-rounds/{am['id']}", headers=env.headers("w1")).json()["stops"][0]
    r = check_in(env, "w1", am["id"], stop["id"], answers=answers(SHOP_ITEMS))
    assert r.status_code == 409 and "starts" in r.json()["detail"], r.text
    assert (
        env.client.get(f"/api/v1/patrol-rounds/{am['id']}", headers=env.headers("w1")).json()["round"]["visited"] == 0
    )
