"""Issue 20, must show 4: the board (/board and GET /api/v1/board) shows the alarms that have climbed the
escalation ladder to the viewer's tier first, with how far they have climbed and how long they have waited.

The ladders are climbed by notify's own service (route_outbox, run_escalations) with the shipped policy, its clock
moved forward instead of waiting: critical step 1 (grid leader) after 180 s, step 2 (community duty and fire
station) after 360 s."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from core.domain import Severity
from core.settings import Settings
from notify import service as notify_service
from notify.policy import load_policy
from tests.api_helpers import ApiEnv, api_env, raise_alarm
from tests.test_pages import login


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded, hierarchy=True) as e:
        yield e


def climb(env: ApiEnv, at: datetime) -> None:
    """notify routes what is new and climbs every ladder due by `at`."""
    policy = load_policy()
    with env.conn() as conn:
        notify_service.route_outbox(conn, policy=policy, now=at)
        notify_service.run_escalations(conn, policy=policy, now=at)


def board(env: ApiEnv, who: str) -> list[dict[str, object]]:
    r = env.client.get("/api/v1/board", headers=env.headers(who))
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def order(items: list[dict[str, object]]) -> list[int]:
    return [item["alarm"]["id"] for item in items]  # type: ignore[index]


def test_escalated_alarms_come_first_for_the_tier_they_have_reached(env: ApiEnv) -> None:
    t0 = datetime.now(UTC)
    with env.conn() as conn, conn.transaction():
        old = raise_alarm(conn, "gas-1", at=t0 - timedelta(minutes=4))  # mg1: will climb to the grid leader
    climb(env, t0)
    with env.conn() as conn, conn.transaction():
        fresh = raise_alarm(conn, "gas-2")  # mg2, same grid: still with its micro-grid worker
        minor = raise_alarm(conn, "smoke-1", "tamper", severity=Severity.MINOR, rule_id="DEV-02")
    climb(env, t0 + timedelta(seconds=200))  # the old alarm's ladder is 200 s old: step 1, the grid leader

    lead = board(env, "lead1")
    assert order(lead) == [old, fresh, minor], "escalated to the leader first, then the most severe"
    first = lead[0]
    assert first["escalated"] is True and first["reached_you"] is True and first["ladder_step"] == 1
    assert first["escalated_to"] == ["leader"] and first["tiers_reached"] == ["worker", "merchant", "leader"]
    assert first["escalated_at"] is not None
    assert 4 * 60 - 5 <= first["waiting_s"] < 4 * 60 + 60, "waited since it was raised, 4 minutes ago"
    assert lead[1]["escalated"] is False and lead[1]["reached_you"] is False and lead[1]["ladder_step"] == 0
    assert env.client.get("/api/v1/board", headers=env.headers("lead1")).json()["tier"] == "leader"

    # the duty office sees it too, but it has not reached them yet: it is not "yours" there
    duty = board(env, "duty1")
    assert duty[0]["alarm"]["id"] == old and duty[0]["escalated"] is True and duty[0]["reached_you"] is False
    climb(env, t0 + timedelta(seconds=400))  # step 2: community duty and the fire station
    duty = board(env, "duty1")
    assert duty[0]["alarm"]["id"] == old and duty[0]["reached_you"] is True
    assert duty[0]["escalated_to"] == ["community", "fire_station"]
    assert board(env, "fire1")[0]["reached_you"] is True

    # the micro-grid worker it climbed past sees it first as well; the other micro-grid's worker not at all
    assert order(board(env, "w1"))[0] == old
    assert old not in order(board(env, "w2"))

    # once someone takes it, it waits no longer and goes below the unacknowledged ones
    assert env.client.post(f"/api/v1/alarms/{old}/ack", headers=env.headers("lead1")).status_code == 200
    lead = board(env, "lead1")
    assert order(lead) == [fresh, minor, old]
    assert lead[2]["waiting_s"] is None and lead[2]["escalated"] is False
    # merchants have no board
    assert env.client.get("/api/v1/board", headers=env.headers("m1")).status_code == 403


def test_the_board_page_shows_the_climb_and_the_wait(env: ApiEnv) -> None:
    t0 = datetime.now(UTC)
    with env.conn() as conn, conn.transaction():
        fresh = raise_alarm(conn, "gas-2")
        old = raise_alarm(conn, "gas-1", at=t0 - timedelta(minutes=7))
    climb(env, t0 - timedelta(seconds=200))
    climb(env, t0)
    client = TestClient(env.app, base_url="https://testserver")  # Secure cookies outside the demo
    login(client, env.tokens["lead1"])
    page = client.get("/board?lang=en").text
    ids = [int(i) for i in re.findall(r'<li id="alarm-(\d+)"', page)]
    assert ids == [old, fresh]
    row = page[page.index(f'id="alarm-{old}"') : page.index(f'id="alarm-{fresh}"')]
    assert "escalated to grid leader" in row and "now yours" in row and "waiting 7.0 min" in row
    assert 'class="alarm sev-critical reached"' in row and 'data-rank="0' in row
    assert "已上报至 网格长" in client.get("/board?lang=zh-CN").text
    # the live stream sends the same row, rank and all
    with client.stream("GET", "/board/stream?max_s=1.5&lang=en") as stream:
        with env.conn() as conn, conn.transaction():
            conn.execute("UPDATE alarm SET updated_at = now() WHERE id = %s", (old,))  # a repeat, as rules writes it
            conn.execute("NOTIFY gridwatch_outbox")
        text = "".join(stream.iter_text())
    assert f'"id": {old}' in text and "escalated to" in text and "data-rank" in text
