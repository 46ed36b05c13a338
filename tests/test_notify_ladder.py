"""Issue 4, must show 1-5: real deliveries (HTTP via apprise json://, e-mail via a local SMTP server) from real
notify workers against the real database: the right person first, then up the ladder until someone acts."""

from __future__ import annotations

import email
import email.policy
import socketserver
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.services import Running, start_services
from core import repo as core_repo
from core.registry import parse_registry
from core.settings import Settings
from notify.policy import Policy, load_policy
from notify.worker import NotifyWorker
from rules import service as rules_service
from tests.support import Publisher, Receiver, wait_for

SH = ZoneInfo("Asia/Shanghai")
# "Now" for notify in these tests: a Wednesday morning (inside w1's roster, outside the night uplift) or a
# Saturday night (outside it). Only notify's clock is shifted; the database and the broker run in real time.
WEEKDAY_MORNING = datetime(2026, 11, 25, 10, 0, tzinfo=SH)
SATURDAY_NIGHT = datetime(2026, 11, 28, 3, 0, tzinfo=SH)
DEAD_URL = "json://127.0.0.1:9/dead"  # nothing listens on the discard port: connection refused at once


class SmtpSink:
    """A real SMTP server on a socket (EHLO, MAIL, RCPT, DATA, QUIT) that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                def say(line: str) -> None:
                    self.wfile.write(line.encode() + b"\r\n")
                    self.wfile.flush()

                say("220 sink ESMTP")
                while raw := self.rfile.readline():
                    verb = raw.decode(errors="replace").strip().split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        say("250-sink\r\n250 8BITMIME")
                    elif verb == "DATA":
                        say("354 end with <CRLF>.<CRLF>")
                        lines = []
                        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                            lines.append(line[1:] if line.startswith(b"..") else line)
                        outer.messages.append(email.message_from_bytes(b"".join(lines), policy=email.policy.default))  # type: ignore[arg-type]
                        say("250 queued")
                    elif verb == "QUIT":
                        say("221 bye")
                        return
                    else:
                        say("250 OK")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, to: str) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=gridwatch@example.com&to={to}&mode=insecure"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def registry_yaml(receiver: Receiver, smtp: SmtpSink, *, w1_url: str | None = None) -> str:
    """Two grids, three micro-grids, every rung of the ladder, a merchant, an elderly resident, a gateway with 50
    detectors behind it."""
    r = receiver.url
    devices = "\n".join(
        f"  - {{id: t-{i:02d}, kind: smoke_detector, site: s3, location: storage, gateway: gw-3}}" for i in range(50)
    )
    return (
        textwrap.dedent(f"""\
        community: {{id: c1, name: Test community}}
        grids:
          - id: g1
            name: Grid one
            micro_grids: [{{id: mg1, name: Micro one}}, {{id: mg2, name: Micro two}}]
          - id: g2
            name: Grid two
            micro_grids: [{{id: mg3, name: Micro three}}]
        workers:
          - {{id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], roster: "Mon-Fri 09:00-17:00",
              notify: ["{w1_url or r("w1")}"]}}
          - {{id: w2, name: Li, role: micro_grid_worker, micro_grids: [mg2, mg3], locale: en,
              notify: ["{smtp.url("li@example.com")}"]}}
          - {{id: w3, name: Zhao, role: micro_grid_worker, micro_grids: [mg3], notify: ["{r("w3")}"]}}
          - {{id: oncall, name: Chen, role: micro_grid_worker, micro_grids: [mg2], on_call: true,
              notify: ["{r("oncall")}"]}}
          - {{id: lead1, name: Leader one, role: grid_leader, grids: [g1], notify: ["{r("lead1")}"]}}
          - {{id: lead2, name: Leader two, role: grid_leader, grids: [g2], notify: ["{r("lead2")}"]}}
          - {{id: duty, name: Duty office, role: community_duty, notify: ["{r("duty")}"]}}
          - {{id: fire, name: Fire station, role: fire_station, notify: ["{r("fire")}"]}}
        merchants:
          - {{id: m1, name: Noodle shop, notify: ["{r("m1")}"]}}
        sites:
          - {{id: s1, kind: shop, micro_grid: mg1, merchant: m1, name: Noodle shop, address: 1 Lane, floor: 1}}
          - {{id: s2, kind: building, micro_grid: mg2, name: Block 2, address: 2 Lane, floor: 3,
              flags: [elderly_living_alone]}}
          - {{id: s3, kind: storage, micro_grid: mg1, name: Storage hall, address: 3 Lane}}
        devices:
          - {{id: gas-1, kind: gas_detector, site: s1, location: kitchen}}
          - {{id: gas-2, kind: gas_detector, site: s2, location: kitchen}}
          - {{id: gas-3, kind: gas_detector, site: s3, location: storage}}
          - {{id: gw-3, kind: gateway, site: s3, location: storage}}
        """)
        + devices
        + "\n"
    )


EVERYONE = ("w1", "w3", "oncall", "lead1", "lead2", "duty", "fire", "m1")


def make_policy(*, hold_s: float = 2.0, **critical: Any) -> Policy:
    """The shipped policy with short ladders for tests (seconds instead of minutes)."""
    base = load_policy().model_dump()
    base["severities"]["critical"] = {
        "steps": [
            {"after_s": 0, "tiers": ["worker", "merchant"]},
            {"after_s": 2, "tiers": ["leader"]},
            {"after_s": 4, "tiers": ["community", "fire_station"]},
        ],
        "remind_every_s": None,
        "max_reminders": 0,
        "renotify_after_ack_s": None,
    } | critical
    base["storm"] = {"hold_s": hold_s, "max_hold_s": 30.0}
    base["retry"] = {"base_s": 0.5, "max_s": 1.0}
    return Policy.model_validate(base)


def shifted_clock(local: datetime) -> Callable[[], datetime]:
    """A clock that reads `local` now and runs at real speed from there."""
    offset = local.astimezone(UTC) - datetime.now(UTC)
    return lambda: datetime.now(UTC) + offset


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture
def community(settings: Settings, receiver: Receiver, smtp: SmtpSink) -> Settings:
    load_registry(settings, registry_yaml(receiver, smtp))
    return settings.model_copy(update={"public_url": "https://gw.example"})


def load_registry(settings: Settings, text: str) -> None:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        core_repo.upsert_registry(conn, registry=parse_registry(text))


@pytest.fixture
def notify_workers() -> Iterator[Callable[..., list[NotifyWorker]]]:
    started: list[NotifyWorker] = []

    def start(
        settings: Settings, *, policy: Policy | None = None, at: datetime = WEEKDAY_MORNING, count: int = 1
    ) -> list[NotifyWorker]:
        clock = shifted_clock(at)
        for _ in range(count):
            worker = NotifyWorker(settings, policy=policy or make_policy(), clock=clock)
            worker.start()
            started.append(worker)
        for worker in started[-count:]:
            wait_for(worker.is_ready, what="notify worker listening")
        return started[-count:]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def ingest(community: Settings) -> Iterator[Running]:
    running = start_services(community, ("ingest",))
    wait_for(running.parts["ingest"].consumer.connected.is_set, what="ingest connected")
    yield running
    running.stop()


def raise_alarm(settings: Settings, device_id: str, alarm_type: str, severity: int, value: float | None = None) -> int:
    """What rules writes for a raised alarm (alarm, alarm_event, outbox, NOTIFY): the database contract."""
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO alarm (device_id, site_id, micro_grid_id, type, rule_id, severity, raised_at, last_seen_at,"
            " value, peak_value) SELECT d.id, s.id, s.micro_grid_id, %s, 'TEST', %s, now(), now(), %s, %s"
            " FROM device d JOIN site s ON s.id = d.site_id WHERE d.id = %s RETURNING id",
            (alarm_type, severity, value, value, device_id),
        ).fetchone()
        assert row is not None
        _transition(conn, row[0], "raised", severity)
        return int(row[0])


def clear_alarm(settings: Settings, alarm_id: int) -> None:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        sev = conn.execute(
            "UPDATE alarm SET active = false, cleared_at = now() WHERE id = %s RETURNING severity", (alarm_id,)
        ).fetchone()
        assert sev is not None
        _transition(conn, alarm_id, "cleared", sev[0])


def _transition(conn: psycopg.Connection[Any], alarm_id: int, kind: str, severity: int) -> None:
    event = conn.execute(
        "INSERT INTO alarm_event (alarm_id, kind, severity) VALUES (%s, %s, %s) RETURNING id",
        (alarm_id, kind, severity),
    ).fetchone()
    assert event is not None
    conn.execute(
        "INSERT INTO outbox (alarm_id, event_id, kind, severity) VALUES (%s, %s, %s, %s)",
        (alarm_id, event[0], kind, severity),
    )
    conn.execute("NOTIFY gridwatch_outbox")


def acknowledge(settings: Settings, alarm_id: int, actor: str) -> None:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        rules_service.acknowledge(conn, alarm_id=alarm_id, actor=actor)


def query(settings: Settings, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.dsn) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def arrivals(receiver: Receiver, path: str) -> list[tuple[dict[str, Any], float]]:
    with receiver._lock:
        return [(d, t) for p, d, t in receiver.received if p == "/" + path]


def titles(receiver: Receiver, path: str) -> list[str]:
    return [d["title"] for d in receiver.for_path(path)]


def test_critical_gas_reaches_the_worker_at_once_then_climbs_the_ladder(
    community: Settings,
    ingest: Running,
    publisher: Publisher,
    receiver: Receiver,
    notify_workers: Callable[..., list[NotifyWorker]],
) -> None:
    notify_workers(community)
    # GAS-02: two samples >= 25 %LEL spanning 10 s (issue 19); the first was taken 10 s ago
    now_ms = int(time.time() * 1000)
    publisher.publish(f"{community.topic_prefix}/gas-1/telemetry", {"ts": now_ms - 10_000, "gas_lel": 30})
    started = time.monotonic()
    publisher.publish(f"{community.topic_prefix}/gas-1/telemetry", {"ts": now_ms, "gas_lel": 30})
    wait_for(lambda: receiver.for_path("w1"), timeout=5, what="w1 hears the gas alarm")
    ((first, w1_at),) = arrivals(receiver, "w1")
    assert w1_at - started < 1.0, f"the covering worker must hear within 1 s (took {w1_at - started:.3f} s)"
    assert "燃气泄漏" in first["title"] and "紧急P1" in first["title"]
    body = first["message"]
    for needle in ("Noodle shop 1楼", "1 Lane", "厨房", "30 %LEL", "关闭燃气总阀", "https://gw.example/alarms/"):
        assert needle in body, f"{needle!r} missing from {body!r}"
    wait_for(lambda: receiver.for_path("m1"), timeout=3, what="the merchant of the premises hears it too")

    wait_for(lambda: receiver.for_path("lead1"), timeout=6, what="grid leader after 2 s unacknowledged")
    ((lead, lead_at),) = arrivals(receiver, "lead1")
    assert 2.0 <= lead_at - started < 4.5, f"leader after the 2 s step delay, got {lead_at - started:.2f} s"
    assert "未确认" in lead["title"] and "Wang" in lead["message"], "the leader is told who was told before"
    wait_for(lambda: receiver.for_path("duty") and receiver.for_path("fire"), timeout=6, what="community + fire")
    duty_at = arrivals(receiver, "duty")[0][1]
    assert 4.0 <= duty_at - started < 6.5, f"community after the 4 s step delay, got {duty_at - started:.2f} s"
    for nobody in ("w3", "oncall", "lead2"):
        assert receiver.for_path(nobody) == [], f"{nobody} is not on this alarm's ladder"

    alarm_id = query(community, "SELECT id FROM alarm WHERE device_id = 'gas-1'")[0][0]
    assert [
        r[0]
        for r in query(
            community,
            "SELECT details->>'step' FROM alarm_event WHERE alarm_id = %s AND kind = 'escalated' ORDER BY id",
            alarm_id,
        )
    ] == ["1", "2"]
    acknowledge(community, alarm_id, "w1")
    for who in ("m1", "lead1", "duty", "fire"):
        wait_for(
            lambda who=who: any("已确认" in t for t in titles(receiver, who)),
            timeout=5,
            what=f"{who} hears that w1 acknowledged",
        )
    told = [d["message"] for d in receiver.for_path("lead1") if "已确认" in d["title"]]
    assert len(told) == 1 and "已由 微网格员 Wang（w1） 确认接警" in told[0], told
    stopped = query(
        community, "SELECT stopped_at IS NOT NULL, stop_reason FROM escalation WHERE alarm_id = %s", alarm_id
    )
    assert stopped == [(True, "acknowledged by w1")]
    time.sleep(0.5)
    assert len(receiver.for_path("w1")) == 1, "raised only: the one who acknowledged is not told it, nor 'still active'"


def test_ack_stops_the_ladder(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    notify_workers(community)
    alarm_id = raise_alarm(community, "gas-1", "gas_leak", 4, 31.0)
    wait_for(lambda: receiver.for_path("w1"), timeout=3, what="w1 hears it")
    acknowledge(community, alarm_id, "w1")
    wait_for(lambda: len(receiver.for_path("m1")) == 2, timeout=3, what="the acknowledgement message")
    time.sleep(3.0)  # past the leader's 2 s step
    assert receiver.for_path("lead1") == [] and receiver.for_path("duty") == [] and receiver.for_path("fire") == []
    assert query(community, "SELECT count(*) FROM alarm_event WHERE kind = 'escalated'") == [(0,)]


def test_outside_roster_the_on_call_worker_is_notified(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    notify_workers(community, at=SATURDAY_NIGHT)
    started = time.monotonic()
    alarm_id = raise_alarm(community, "gas-1", "gas_leak", 4, 40.0)
    wait_for(lambda: receiver.for_path("oncall"), timeout=3, what="the on-call worker of the grid")
    assert receiver.for_path("w1") == [], "w1 works Mon-Fri 09:00-17:00"
    tiers = query(
        community, "SELECT worker_id, tier, step FROM notification WHERE worker_id IS NOT NULL ORDER BY id LIMIT 1"
    )
    assert tiers == [("oncall", "worker", 0)]
    # Night uplift halves P1 timers: the leader comes after 1 s instead of 2 s.
    wait_for(lambda: receiver.for_path("lead1"), timeout=3, what="leader at the halved night delay")
    assert arrivals(receiver, "lead1")[0][1] - started >= 1.0
    deadline = query(
        community, "SELECT extract(epoch FROM next_step_at - started_at) FROM escalation WHERE alarm_id = %s", alarm_id
    )
    assert deadline == [(2,)], "the community step is due 2 s after the start at night, not 4 s"


def test_receiver_down_for_a_while_is_retried_and_delivered_once(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    receiver.status = 503
    notify_workers(community)
    raise_alarm(community, "gas-1", "gas_leak", 4, 30.0)
    failed_sql = (
        "SELECT count(*) FROM delivery_attempt da JOIN notification n ON n.id = da.notification_id "
        "WHERE n.worker_id = 'w1' AND NOT da.ok"
    )
    wait_for(lambda: query(community, failed_sql)[0][0] >= 2, timeout=5, what="failed attempts recorded")
    receiver.status = 200
    wait_for(lambda: receiver.for_path("w1"), timeout=5, what="delivery once the receiver is back")
    time.sleep(1.5)
    assert len(receiver.for_path("w1")) == 1, "delivered once, no duplicates"
    rows = query(
        community,
        "SELECT da.ok, da.detail FROM delivery_attempt da JOIN notification n "
        "ON n.id = da.notification_id WHERE n.worker_id = 'w1' ORDER BY da.id",
    )
    assert [ok for ok, _ in rows][-1] is True and not any(ok for ok, _ in rows[:-1]) and len(rows) >= 3
    assert query(community, "SELECT status, attempts >= 3 FROM notification WHERE worker_id = 'w1'") == [("sent", True)]
    for path in EVERYONE:
        got = [(d["title"], d["message"]) for d in receiver.for_path(path)]
        assert len(got) == len(set(got)), f"{path} received a duplicate: {got}"


def test_receiver_down_for_good_escalation_goes_on(
    settings: Settings, receiver: Receiver, smtp: SmtpSink, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    load_registry(settings, registry_yaml(receiver, smtp, w1_url=DEAD_URL))
    policy = make_policy(
        steps=[
            {"after_s": 0, "tiers": ["worker"]},
            {"after_s": 3, "tiers": ["leader"]},
            {"after_s": 6, "tiers": ["community", "fire_station"]},
        ]
    )
    notify_workers(settings, policy=policy)
    started = time.monotonic()
    alarm_id = raise_alarm(settings, "gas-1", "gas_leak", 4, 30.0)
    wait_for(lambda: receiver.for_path("lead1"), timeout=5, what="the leader, since w1 cannot be reached")
    lead_at = arrivals(receiver, "lead1")[0][1] - started
    assert lead_at < 2.5, f"every channel of w1 failed: the ladder moves on at once, not after 3 s ({lead_at:.2f})"
    wait_for(lambda: receiver.for_path("duty") and receiver.for_path("fire"), timeout=10, what="community + fire")
    duty_at = arrivals(receiver, "duty")[0][1] - started
    assert 5.0 <= duty_at < 8.5, f"the next step keeps its own time (6 s), got {duty_at:.2f} s"
    attempts = query(
        settings,
        "SELECT da.ok, da.channel FROM delivery_attempt da JOIN notification n "
        "ON n.id = da.notification_id WHERE n.worker_id = 'w1'",
    )
    assert attempts and not any(ok for ok, _ in attempts)
    assert attempts[0][1] == "json://127.0.0.1:9/dead"
    events = query(settings, "SELECT kind FROM alarm_event WHERE alarm_id = %s ORDER BY id", alarm_id)
    assert [k for (k,) in events] == ["raised", "escalated", "escalated"]


def test_fifty_alarms_from_one_site_become_one_message_per_recipient(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    notify_workers(community)
    started = time.monotonic()
    for i in range(50):
        raise_alarm(community, f"t-{i:02d}", "tamper", 3)
        time.sleep(max(0.0, started + (i + 1) * 0.2 - time.monotonic()))  # 50 alarms in 10 s
    wait_for(lambda: receiver.for_path("w1"), timeout=10, what="the grouped message")
    time.sleep(2.5)
    got = receiver.for_path("w1")
    assert len(got) == 1, f"one grouped message, not {len(got)}"
    assert got[0]["title"] == "[重要P2] Storage hall 共 50 条报警"
    assert got[0]["message"].count("设备被拆") == 20 and "另有 30 条" in got[0]["message"]
    assert query(community, "SELECT cardinality(alarm_ids), status FROM notification WHERE worker_id = 'w1'") == [
        (50, "sent")
    ]
    for nobody in ("w3", "oncall", "lead1", "m1"):
        assert receiver.for_path(nobody) == []


def test_life_safety_alarms_are_never_held_for_grouping(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    notify_workers(community)
    started = time.monotonic()
    raise_alarm(community, "gas-3", "gas_leak", 4, 35.0)
    raise_alarm(community, "t-07", "smoke", 4)
    wait_for(lambda: len(receiver.for_path("w1")) == 2, timeout=3, what="two separate messages")
    assert max(t for _, t in arrivals(receiver, "w1")) - started < 1.0
    assert sorted("烟雾报警" in t for t in titles(receiver, "w1")) == [False, True]


def test_two_notify_processes_deliver_every_message_exactly_once(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    workers = notify_workers(community, count=2, policy=make_policy(steps=[{"after_s": 0, "tiers": ["worker"]}]))
    alarms = [raise_alarm(community, f"t-{i:02d}", "smoke", 4) for i in range(20)]
    wait_for(lambda: len(receiver.for_path("w1")) >= 20, timeout=10, what="20 alarm messages")
    for alarm_id in alarms[:10]:
        acknowledge(community, alarm_id, "lead1")  # w1 hears who took each one
    wait_for(lambda: len(receiver.for_path("w1")) >= 30, timeout=10, what="10 acknowledgement messages")
    time.sleep(1.5)
    got = [(d["title"], d["message"]) for d in receiver.for_path("w1")]
    assert len(got) == 30 and len(set(got)) == 30, "each alarm raised once and each acknowledgement once"
    raised = sorted(int(m.rsplit("#", 1)[1]) for t, m in got if "新报警" in t)
    acked = sorted(int(m.rsplit("#", 1)[1]) for t, m in got if "已确认" in t)
    assert raised == alarms and acked == alarms[:10]
    sent = query(
        community,
        "SELECT n.id, count(*) FILTER (WHERE da.ok) FROM notification n "
        "JOIN delivery_attempt da ON da.notification_id = n.id GROUP BY n.id",
    )
    assert len(sent) == 30 and all(ok == 1 for _, ok in sent), "one successful attempt per notification"
    assert all(check.ok for w in workers for check in w.checks())


def test_english_e_mail_and_vulnerable_site_starts_one_step_higher(
    community: Settings, receiver: Receiver, smtp: SmtpSink, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    notify_workers(community)
    raise_alarm(community, "gas-2", "gas_leak", 4, 42.0)
    wait_for(lambda: smtp.messages, timeout=5, what="an e-mail to Li")
    msg = smtp.messages[0]
    assert msg["To"] == "li@example.com"
    assert "CRITICAL P1" in msg["Subject"] and "gas leak" in msg["Subject"]
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    for needle in (
        "Block 2, floor 3, 2 Lane",
        "kitchen",
        "42 %LEL",
        "elderly person lives alone",
        "shut the main gas valve",
        "Acknowledge: https://gw.example/alarms/",
    ):
        assert needle in text, f"{needle!r} missing from {text!r}"
    # elderly_living_alone: the grid leader is told at once with the workers, not after 2 s.
    wait_for(
        lambda: receiver.for_path("oncall") and receiver.for_path("lead1"),
        timeout=1.5,
        what="worker tier and leader together",
    )
    assert receiver.for_path("w1") == [] and receiver.for_path("duty") == []
    wait_for(lambda: receiver.for_path("duty"), timeout=4, what="community one step sooner (2 s, not 4 s)")


def test_silences_and_offline_gateway_inhibition(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    now = shifted_clock(WEEKDAY_MORNING)()
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO silence (site_id, starts_at, ends_at, reason) VALUES ('s3', %s, %s, 'repairs')",
            (now - timedelta(minutes=1), now + timedelta(hours=1)),
        )
        conn.execute(
            "INSERT INTO silence (device_id, starts_at, ends_at, reason, include_life_safety) "
            "VALUES ('t-03', %s, %s, 'detector replaced', true)",
            (now - timedelta(minutes=1), now + timedelta(hours=1)),
        )
    notify_workers(community, policy=make_policy(hold_s=1.0))
    tamper = raise_alarm(community, "t-01", "tamper", 3)
    smoke = raise_alarm(community, "t-02", "smoke", 4)
    overridden = raise_alarm(community, "t-03", "smoke", 4)
    wait_for(lambda: receiver.for_path("w1"), timeout=3, what="the smoke alarm despite the site silence")
    time.sleep(1.5)
    assert len(receiver.for_path("w1")) == 1 and "烟雾报警" in titles(receiver, "w1")[0]
    reasons = dict(query(community, "SELECT alarm_id, reason FROM notification WHERE status = 'suppressed'"))
    assert set(reasons) == {tamper, overridden} and smoke not in reasons
    assert reasons[tamper].startswith("silenced (site s3")
    assert query(community, "SELECT count(*) FROM escalation WHERE alarm_id IN (%s, %s)", tamper, overridden) == [
        (0,)
    ], "a silenced alarm does not climb the ladder"

    with psycopg.connect(community.dsn) as conn, conn.transaction():
        conn.execute("DELETE FROM silence")
    raise_alarm(community, "gw-3", "offline", 2)
    child = raise_alarm(community, "t-10", "offline", 2)
    wait_for(lambda: len(receiver.for_path("w1")) == 2, timeout=5, what="the gateway's offline message")
    time.sleep(1.5)
    assert len(receiver.for_path("w1")) == 2
    assert "gw-3" in receiver.for_path("w1")[1]["message"]
    assert query(community, "SELECT status, reason FROM notification WHERE alarm_id = %s", child) == [
        ("suppressed", "inhibited: gateway gw-3 is offline")
    ]


def test_reminders_until_acknowledged_and_renotify_while_still_active(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    policy = make_policy(
        steps=[{"after_s": 0, "tiers": ["worker"]}, {"after_s": 600, "tiers": ["leader"]}],
        remind_every_s=1.0,
        max_reminders=10,
        renotify_after_ack_s=1.5,
        hold_s=0.3,
    )
    notify_workers(community, policy=policy)
    alarm_id = raise_alarm(community, "gas-1", "gas_leak", 4, 30.0)
    wait_for(lambda: sum("提醒" in t for t in titles(receiver, "w1")) >= 2, timeout=8, what="two reminders")
    acknowledge(community, alarm_id, "duty")  # w1 hears that the duty office took it
    wait_for(lambda: any("已确认" in t for t in titles(receiver, "w1")), timeout=3, what="ack message")
    reminders = sum("提醒" in t for t in titles(receiver, "w1"))
    wait_for(
        lambda: any("确认后仍在报警" in t for t in titles(receiver, "w1")),
        timeout=6,
        what="re-notification: acknowledged but still active",
    )
    assert sum("提醒" in t for t in titles(receiver, "w1")) == reminders, "no reminder after the ack"
    clear_alarm(community, alarm_id)
    wait_for(lambda: any("已恢复" in t for t in titles(receiver, "w1")), timeout=3, what="cleared message")
    count = len(receiver.for_path("w1"))
    time.sleep(1.5)
    assert len(receiver.for_path("w1")) == count, "nothing more once the alarm has cleared"
    assert receiver.for_path("m1") == [], "policy: the merchant is not on this test ladder"


def test_notify_test_command_sends_through_every_channel(
    community: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", community.dsn)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["notify", "test", "--worker", "lead1"])
    assert result.exit_code == 0, result.output
    assert f"ok   json://127.0.0.1:{receiver.port}/lead1: delivered" in result.output
    got = receiver.for_path("lead1")
    assert len(got) == 1 and got[0]["title"] == "gridwatch 测试消息：Leader one"

    with psycopg.connect(community.dsn) as conn, conn.transaction():
        conn.execute("UPDATE worker SET notify_urls = %s WHERE id = 'w3'", ([DEAD_URL, receiver.url("w3")],))
    result = runner.invoke(cli_app, ["notify", "test", "--worker", "w3"])
    assert result.exit_code == 1, "one channel failed"
    assert "FAIL json://127.0.0.1:9/dead" in result.output and len(receiver.for_path("w3")) == 1
    assert runner.invoke(cli_app, ["notify", "test", "--worker", "nobody"]).exit_code == 2


def test_a_restarted_notify_process_neither_loses_nor_repeats(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    receiver.status = 503
    [first] = notify_workers(community, policy=make_policy(steps=[{"after_s": 0, "tiers": ["worker"]}]))
    alarms = [raise_alarm(community, f"t-{i:02d}", "smoke", 4) for i in range(5)]
    tried = "SELECT count(*) FROM notification WHERE worker_id = 'w1' AND attempts > 0"
    wait_for(lambda: query(community, tried)[0][0] == 5, timeout=5, what="every message tried once")
    first.stop()
    receiver.status = 200
    notify_workers(community, policy=make_policy(steps=[{"after_s": 0, "tiers": ["worker"]}]))
    wait_for(lambda: len(receiver.for_path("w1")) >= 5, timeout=5, what="delivery by the new process")
    time.sleep(1.5)
    got = sorted(int(d["message"].rsplit("#", 1)[1]) for d in receiver.for_path("w1"))
    assert got == alarms, "each alarm exactly once across the restart"
    assert query(community, "SELECT count(*) FROM outbox WHERE routed_at IS NULL") == [(0,)]


def test_a_hanging_channel_does_not_hold_up_the_next_alarm(
    settings: Settings, receiver: Receiver, smtp: SmtpSink, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    import socket

    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)  # connections complete in the backlog; nobody ever answers
    try:
        url = f"json://127.0.0.1:{black_hole.getsockname()[1]}/w1"
        load_registry(settings, registry_yaml(receiver, smtp, w1_url=url))
        slow = settings.model_copy(update={"notify_timeout_s": 3.0})
        notify_workers(slow, policy=make_policy(steps=[{"after_s": 0, "tiers": ["worker", "merchant"]}]))
        raise_alarm(slow, "gas-1", "gas_leak", 4, 30.0)  # w1 hangs for 3 s
        wait_for(lambda: receiver.for_path("m1"), timeout=2, what="the merchant, sent in parallel with w1")
        time.sleep(0.3)
        started = time.monotonic()
        raise_alarm(slow, "gas-2", "gas_leak", 4, 30.0)  # another micro-grid, while w1's send hangs
        wait_for(lambda: receiver.for_path("oncall"), timeout=3, what="the next alarm's worker")
        assert arrivals(receiver, "oncall")[0][1] - started < 1.0, "not queued behind the hanging channel"
        wait_for(
            lambda: query(
                slow,
                "SELECT count(*) FROM delivery_attempt da JOIN notification n "
                "ON n.id = da.notification_id WHERE n.worker_id = 'w1' AND NOT da.ok",
            )[0][0],
            timeout=6,
            what="the hanging attempt recorded as failed",
        )
    finally:
        black_hole.close()


def raise_severity(settings: Settings, alarm_id: int, severity: int) -> None:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        conn.execute("UPDATE alarm SET severity = %s WHERE id = %s", (severity, alarm_id))
        _transition(conn, alarm_id, "severity_raised", severity)


def test_severity_rising_to_critical_notifies_at_once_and_speeds_up_the_ladder(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    notify_workers(community)
    alarm_id = raise_alarm(community, "gas-1", "co_elevated", 2, 35.0)  # P3 advisory: held, leader after 30 min
    wait_for(lambda: receiver.for_path("w1"), timeout=5, what="the minor alarm (after the grouping hold)")
    assert query(community, "SELECT extract(epoch FROM next_step_at - started_at) FROM escalation") == [(1800,)]
    started = time.monotonic()
    raise_severity(community, alarm_id, 4)
    wait_for(lambda: len(receiver.for_path("w1")) == 2, timeout=3, what="the rise, at once")
    assert arrivals(receiver, "w1")[1][1] - started < 1.0
    assert "报警升级" in titles(receiver, "w1")[1] and "紧急P1" in titles(receiver, "w1")[1]
    # Re-planned on the critical ladder from the alarm's start: the leader's 2 s step is already due.
    wait_for(lambda: receiver.for_path("lead1"), timeout=4, what="the leader on the critical timetable")


def test_quiet_hours_defer_minor_messages_to_the_merchant(
    community: Settings, receiver: Receiver, notify_workers: Callable[..., list[NotifyWorker]]
) -> None:
    at = datetime(2026, 11, 25, 23, 30, tzinfo=SH)  # a Wednesday night
    notify_workers(community, at=at)
    alarm_id = raise_alarm(community, "gas-1", "gas_drift", 2, 6.0)
    wait_for(lambda: receiver.for_path("oncall"), timeout=5, what="the on-call worker, at once (after the hold)")
    rows = query(
        community,
        "SELECT next_attempt_at, status, reason FROM notification WHERE merchant_id = 'm1' AND alarm_id = %s",
        alarm_id,
    )
    assert len(rows) == 1
    next_at, status, reason = rows[0]
    assert status == "pending" and next_at == datetime(2026, 11, 26, 8, 0, tzinfo=SH)
    assert reason == "quiet hours until 2026-11-26T08:00+08:00"
    assert receiver.for_path("m1") == []


def test_notify_silence_command(community: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", community.dsn)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["notify", "silence", "--site", "s3", "--minutes", "30", "--reason", "rewiring"])
    assert result.exit_code == 0, result.output
    assert "life-safety alarms still notify" in result.output
    rows = query(
        community,
        "SELECT site_id, device_id, reason, include_life_safety, "
        "round(extract(epoch FROM ends_at - starts_at)) FROM silence",
    )
    assert rows == [("s3", None, "rewiring", False, 1800)]
    result = runner.invoke(
        cli_app, ["notify", "silence", "--device", "t-03", "--minutes", "5", "--include-life-safety"]
    )
    assert result.exit_code == 0 and "life-safety included" in result.output
    assert runner.invoke(cli_app, ["notify", "silence", "--site", "nowhere", "--minutes", "5"]).exit_code == 2
    assert (
        runner.invoke(cli_app, ["notify", "silence", "--site", "s3", "--device", "t-03", "--minutes", "5"]).exit_code
        == 2
    )
