"""Drills (网格赶考, issue 21): an admin dispatches a marked drill to a chosen or random micro-grid of their
communities; its workers get it through their own channels, labelled a drill; their acknowledgement and arrival
times make the drill report; a drill leaves no alarm, finding, work order or ledger entry behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from field import service as field_service
from notify.delivery import Sender
from tests.api_helpers import ApiEnv, api_env
from tests.support import Receiver
from tests.test_pages import login


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded, hierarchy=True) as e:
        yield e


def test_a_drill_reaches_the_workers_labelled_and_times_their_response(env: ApiEnv, receiver: Receiver) -> None:
    r = env.client.post(
        "/api/v1/admin/drills", headers=env.headers("cadmin"), json={"micro_grid_id": "mg1", "scenario": "gas leak"}
    )
    assert r.status_code == 201, r.text
    drill = r.json()
    assert (drill["drill"], drill["site_id"], [x["worker_id"] for x in drill["responders"]]) == (True, "s1", ["w1"])
    sender = Sender(timeout_s=2, deadline_s=5)
    try:
        with env.conn() as conn, conn.transaction():
            sent = field_service.deliver_notices(
                conn,
                send=lambda urls, title, body, who: [
                    (x.ok, x.detail) for x in sender.send(urls, title, body, recipient=who)
                ],
                now=datetime.now(UTC),
            )
    finally:
        sender.close()
    assert sent == 1
    (message,) = receiver.for_path("w1")
    assert "演练 DRILL" in message["title"] and "not a real alarm" in message["message"]
    did = drill["id"]
    ack = env.client.post(f"/api/v1/drills/{did}/ack", headers=env.headers("w1"))
    assert ack.status_code == 200 and ack.json()["responders"][0]["ack_s"] >= 0
    assert env.client.post(f"/api/v1/drills/{did}/ack", headers=env.headers("w1")).status_code == 409
    arrived = env.client.post(f"/api/v1/drills/{did}/arrived", headers=env.headers("w1")).json()
    assert (arrived["acknowledged"], arrived["arrived"]) == (1, 1) and arrived["median_arrival_s"] is not None
    assert env.client.post(f"/api/v1/drills/{did}/ack", headers=env.headers("w2")).status_code == 404
    assert env.client.post(f"/api/v1/drills/{did}/ack", headers=env.headers("lead1")).status_code == 409
    assert env.client.post(f"/api/v1/drills/{did}/bogus", headers=env.headers("w1")).status_code == 422
    assert env.client.get(f"/api/v1/drills/{did}", headers=env.headers("c2admin")).status_code == 404
    assert env.client.post("/api/v1/admin/drills", headers=env.headers("w1"), json={}).status_code == 403
    assert (
        env.client.post(
            "/api/v1/admin/drills", headers=env.headers("c2admin"), json={"micro_grid_id": "mg1"}
        ).status_code
        == 404
    ), "not their community"
    random_pick = env.client.post("/api/v1/admin/drills", headers=env.headers("c2admin"), json={}).json()
    assert random_pick["micro_grid_id"] == "mg9" and [x["worker_id"] for x in random_pick["responders"]] == ["w9"]
    # never a hazard, a finding, a work order or a score entry
    with env.conn() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM alarm), (SELECT count(*) FROM score_finding), "
            "(SELECT count(*) FROM work_order), (SELECT count(*) FROM score_entry), (SELECT count(*) FROM outbox)"
        ).fetchone()
    assert counts == (0, 0, 0, 0, 0)
    kpis = env.client.get("/api/v1/admin/kpis/communities/c1", headers=env.headers("cadmin"))
    assert kpis.status_code == 200 and "drill" not in kpis.text


def test_the_drill_pages(env: ApiEnv) -> None:
    admin = TestClient(env.app, base_url="https://testserver")
    csrf = login(admin, env.tokens["cadmin"])
    r = admin.post("/drills", data={"csrf": csrf, "micro_grid_id": "mg2", "scenario": "smoke"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    worker = TestClient(env.app, base_url="https://testserver")
    w_csrf = login(worker, env.tokens["w2"])
    page = worker.get(url + "?lang=en")
    assert "This is a drill, not a real alarm" in page.text and 'id="drill-ack"' in page.text
    assert worker.post(f"{url}/ack", data={"csrf": w_csrf}, follow_redirects=False).status_code == 303
    page = worker.get(url)
    assert 'id="drill-ack"' not in page.text and 'id="drill-arrived"' in page.text
    assert re.search(r'data-worker="w2"><td>[^<]*</td><td class="ack">\d+ s</td>', page.text)
    assert 'id="dispatch-form"' not in worker.get("/drills").text
    assert worker.post("/drills", data={"csrf": w_csrf}).status_code == 403


def test_a_scheduled_drill_stays_a_surprise_until_it_is_dispatched(env: ApiEnv, receiver: Receiver) -> None:
    from datetime import timedelta

    at = datetime.now(UTC) + timedelta(hours=2)
    r = env.client.post(
        "/api/v1/admin/drills", headers=env.headers("admin"), json={"micro_grid_id": "mg2", "at": at.isoformat()}
    )
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    assert env.client.get("/api/v1/drills", headers=env.headers("w2")).json() == [], "not yet: a surprise"
    assert env.client.get(f"/api/v1/drills/{did}", headers=env.headers("w2")).status_code == 404
    assert env.client.post(f"/api/v1/drills/{did}/ack", headers=env.headers("w2")).status_code == 404
    assert [d["id"] for d in env.client.get("/api/v1/drills", headers=env.headers("admin")).json()] == [did]
    with env.conn() as conn, conn.transaction():
        sent = field_service.deliver_notices(conn, send=lambda *_: [(True, "")], now=datetime.now(UTC))
    assert sent == 0, "its message waits for its time"
    with env.conn() as conn, conn.transaction():
        sent = field_service.deliver_notices(conn, send=lambda *_: [(True, "")], now=at + timedelta(seconds=1))
    assert sent == 1
    far = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    assert env.client.post("/api/v1/admin/drills", headers=env.headers("admin"), json={"at": far}).status_code == 422


def test_a_drill_goes_to_the_workers_on_duty_as_an_alarm_would(env: ApiEnv) -> None:
    # Issue 21 (4): a drill is "delivered like a real alarm", so it is routed as one (core.routing): the covering
    # worker off duty by roster is not dispatched; the on-call worker of the same grid is.
    at = datetime.now(UTC) + timedelta(hours=1)
    with env.conn() as conn, conn.transaction():
        (tz,) = conn.execute("SELECT timezone FROM community WHERE id = 'c1'").fetchone() or ("UTC",)
        shift = at.astimezone(ZoneInfo(tz)) + timedelta(hours=6)
        roster = f"Mon-Sun {shift:%H:%M}-{shift + timedelta(hours=2):%H:%M}"  # w1 is off duty at the drill's time
        conn.execute("UPDATE worker SET roster = %s WHERE id = 'w1'", (roster,))
        conn.execute("UPDATE worker SET on_call = true WHERE id = 'w2'")
    r = env.client.post(
        "/api/v1/admin/drills",
        headers=env.headers("cadmin"),
        json={"micro_grid_id": "mg1", "scenario": "gas leak", "at": at.isoformat()},
    )
    assert r.status_code == 201, r.text
    assert [x["worker_id"] for x in r.json()["responders"]] == ["w2"]
