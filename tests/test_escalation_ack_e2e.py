"""Issue 20, must show 3 (and 2 and 4 on the way): end to end through the broker, ingest, rules, notify and the API
running as `gridwatch serve` runs them. A gas reading is published; nobody acknowledges, so the ladder climbs to the
grid leader, whose board shows the alarm first with how long it has waited; the leader opens the link in their
message and acknowledges in one tap. The ladder stops exactly as for a micro-grid worker (the community duty office
and the fire station are never called), and the people below are told who took it, once each, in their language.

The ladder's timings are shortened by configuration (a policy file in GRIDWATCH_NOTIFY_POLICY, which notify and the
API both load), not by waiting through minutes: the leader after 3 s, the community after 10 s."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from api import auth
from app.services import Running, start_services
from core.settings import Settings
from tests.api_helpers import free_port
from tests.support import Publisher, Receiver, load_registry, wait_for

LEADER_AFTER_S = 3.0
COMMUNITY_AFTER_S = 10.0
POLICY = f"""\
timezone: Asia/Shanghai
life_safety_types: [gas_low, gas_leak, gas_explosion_risk, co_alarm, co_high, smoke, fire_confirmed]
night: {{severities: []}}          # no night uplift: the test runs at any hour with the same timings
severities:
  critical:
    steps:
      - {{after_s: 0, tiers: [worker, merchant]}}
      - {{after_s: {LEADER_AFTER_S}, tiers: [leader]}}
      - {{after_s: {COMMUNITY_AFTER_S}, tiers: [community, fire_station]}}
    remind_every_s: null
    max_reminders: 0
    renotify_after_ack_s: null
  major: {{steps: [{{after_s: 0, tiers: [worker]}}]}}
  minor: {{steps: [{{after_s: 0, tiers: [worker]}}]}}
  info: {{steps: []}}
"""


def registry(receiver: Receiver) -> str:
    r = receiver.url
    return textwrap.dedent(f"""\
        community: {{id: c1, name: Test community}}
        grids:
          - id: g1
            name: Grid one
            micro_grids: [{{id: mg1, name: Micro one}}]
        workers:
          - {{id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], notify: ["{r("w1")}"]}}
          - {{id: w1en, name: Li, role: micro_grid_worker, micro_grids: [mg1], locale: en, notify: ["{r("w1en")}"]}}
          - {{id: lead1, name: Leader one, role: grid_leader, grids: [g1], notify: ["{r("lead1")}"]}}
          - {{id: duty, name: Duty office, role: community_duty, notify: ["{r("duty")}"]}}
          - {{id: fire, name: Fire station, role: fire_station, notify: ["{r("fire")}"]}}
        merchants:
          - {{id: m1, name: Noodle shop, notify: ["{r("m1")}"]}}
        sites:
          - {{id: s1, kind: shop, micro_grid: mg1, merchant: m1, name: Noodle shop, address: 1 Lane, floor: 1}}
        devices:
          - {{id: gas-1, kind: gas_detector, site: s1, location: kitchen}}
        """)


@pytest.fixture
def served(settings: Settings, receiver: Receiver, tmp_path: Path) -> Iterator[tuple[Settings, Running]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    port = free_port()
    configured = settings.model_copy(
        update={
            "notify_policy": str(policy),
            "api_host": "127.0.0.1",
            "api_port": port,
            "public_url": f"http://127.0.0.1:{port}",
        }
    )
    load_registry(configured, registry(receiver))
    running = start_services(configured, ("ingest", "notify", "api"))
    try:
        wait_for(running.parts["ingest"].consumer.connected.is_set, what="ingest connected")
        wait_for(running.parts["notify"].is_ready, what="notify listening")
        wait_for(lambda: _up(configured.public_url), what="the API serving")
        yield configured, running
    finally:
        running.stop()


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def token(settings: Settings, worker: str) -> dict[str, str]:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        made = auth.create_token(
            conn, secret_key=settings.secret_key.get_secret_value(), role="worker", worker_id=worker
        )
    return {"Authorization": f"Bearer {made}"}


def messages(receiver: Receiver, who: str) -> list[tuple[str, str]]:
    return [(d["title"], d["message"]) for d in receiver.for_path(who)]


def test_a_leader_takes_an_escalated_alarm_from_the_link_and_the_ladder_stops(
    served: tuple[Settings, Running], publisher: Publisher, receiver: Receiver
) -> None:
    settings, _running = served
    base = settings.public_url
    started = time.monotonic()
    publisher.publish(f"{settings.topic_prefix}/gas-1/telemetry", {"gas_lel": 30, "gas": True})  # flagged: confirmed
    for who in ("w1", "w1en", "m1"):
        wait_for(lambda who=who: receiver.for_path(who), timeout=5, what=f"{who} hears the gas alarm")
    assert "确认：" + base + "/alarms/" in messages(receiver, "w1")[0][1]
    assert receiver.for_path("lead1") == [], "the leader is not called before the ladder's step"

    # nobody acknowledges: after 3 s the grid leader is called, with their own link
    wait_for(lambda: receiver.for_path("lead1"), timeout=LEADER_AFTER_S + 4, what="the grid leader, escalated")
    assert time.monotonic() - started >= LEADER_AFTER_S - 0.5
    [(title, body)] = messages(receiver, "lead1")
    assert "未确认" in title
    link = re.search(re.escape(base) + r"/alarms/(\d+)/link/(\S+)", body)
    assert link, body
    alarm_id = int(link.group(1))
    assert link.group(2).startswith("w~lead1~"), "the link is the leader's own"

    # the leader's board: this alarm first, escalated to them, with how long it has waited
    lead_token = token(settings, "lead1")
    board = httpx.get(base + "/api/v1/board", headers=lead_token).json()
    top = board["items"][0]
    assert board["tier"] == "leader" and top["alarm"]["id"] == alarm_id
    assert top["reached_you"] and top["escalated_to"] == ["leader"] and top["waiting_s"] >= LEADER_AFTER_S - 1

    # one tap on the phone: open the link (no token, no login) and acknowledge
    with httpx.Client(base_url=base, follow_redirects=False) as phone:
        page = phone.get(link.group(0).removeprefix(base))
        assert page.status_code == 200 and 'id="ack-form"' in page.text
        csrf = re.search(r'id="ack-form">\s*<input type="hidden" name="csrf" value="([^"]+)"', page.text)
        assert csrf
        tapped = phone.post(
            f"/alarms/{alarm_id}/link/{link.group(2)}/ack", data={"csrf": csrf.group(1)}, headers={"Origin": base}
        )
        assert tapped.status_code == 303, tapped.text
    acked_at = time.monotonic() - started
    assert acked_at < COMMUNITY_AFTER_S - 1, f"acknowledged {acked_at:.1f} s in, before the community step"
    alarm = httpx.get(f"{base}/api/v1/alarms/{alarm_id}", headers=token(settings, "w1")).json()
    assert (alarm["acknowledged"], alarm["acknowledged_by"]) == (True, "lead1"), "the link records who"

    # the people below hear who took it: one message each, in their own language
    expected = {
        "w1": ("已确认", "已由 网格长 Leader one（lead1） 确认接警"),
        "m1": ("已确认", "已由 网格长 Leader one（lead1） 确认接警"),
        "w1en": ("ACKNOWLEDGED", "Acknowledged by Leader one (grid leader, lead1)"),
    }
    for who, (word, _sentence) in expected.items():
        wait_for(
            lambda who=who, word=word: any(word in t for t, _ in messages(receiver, who)),
            timeout=5,
            what=f"{who} hears that the leader took it",
        )

    # past the community step's time: the ladder stopped exactly as for a worker's acknowledgement
    time.sleep(max(0.0, COMMUNITY_AFTER_S + 2.0 - (time.monotonic() - started)))
    assert receiver.for_path("duty") == [] and receiver.for_path("fire") == [], "the ladder climbs no further"
    for who, (word, sentence) in expected.items():
        told = [m for t, m in messages(receiver, who) if word in t]
        assert len(told) == 1 and sentence in told[0], (who, messages(receiver, who))
        assert len(messages(receiver, who)) == 2, f"{who}: the alarm, then who took it; nothing else"
    assert len(messages(receiver, "lead1")) == 1, "the one who took it is not told their own acknowledgement"
    with psycopg.connect(settings.dsn) as conn:
        ladder = conn.execute(
            "SELECT step, stopped_at IS NOT NULL, stop_reason, next_step_at FROM escalation WHERE alarm_id = %s",
            (alarm_id,),
        ).fetchall()
        events = conn.execute(
            "SELECT kind, actor, details->>'step' FROM alarm_event WHERE alarm_id = %s ORDER BY id", (alarm_id,)
        ).fetchall()
    assert ladder == [(1, True, "acknowledged by lead1", None)]
    assert events == [("raised", None, None), ("escalated", "notify", "1"), ("acknowledged", "lead1", None)]
    # and the board no longer counts it as waiting
    top = httpx.get(base + "/api/v1/board", headers=lead_token).json()["items"][0]
    assert top["waiting_s"] is None and top["reached_you"] is False
