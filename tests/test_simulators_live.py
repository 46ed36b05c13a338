"""Simulators against the real broker (and, for the tour, the real ingest and database): bounded in-flight
publishing, last will and online status, reconnect, the fleet runner, `gridwatch simulate`, the demo tour."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest

from app.services import Running, start_services
from core import repo as core_repo
from core.embedded import free_port
from core.registry import parse_registry, read_registry
from core.settings import Settings
from simulators import tour
from simulators.fastlink import FastLink
from simulators.fleet import Fleet, synthetic_devices, write_registry
from simulators.formats import Out
from simulators.publisher import MqttLink, PublishError
from tests.conftest import ROOT, Services
from tests.support import wait_for


class Sink:
    """A real subscriber recording what arrives (topic, payload, retain)."""

    def __init__(self, services: Services, topic: str) -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sink-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect("127.0.0.1", services.mqtt_port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.topic, msg.payload, bool(msg.retain)))

    def count(self) -> int:
        with self.lock:
            return len(self.got)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}/gw/v1"


def test_publisher_bounds_messages_in_flight(services: Services, prefix: str) -> None:
    """5,000 QoS-1 messages through a link allowing 20 in flight: never more outstanding, none lost."""
    sink = Sink(services, f"{prefix}/#")
    link = MqttLink(services.mqtt_url, max_inflight=20).start()
    peak = 0
    try:
        for i in range(5_000):
            assert link.publish(Out(f"{prefix}/d{i % 7}/telemetry", orjson.dumps({"seq": i, "gas_lel": 1})))
            peak = max(peak, link.inflight)
        assert link.flush(30)
    finally:
        link.close()
    assert peak <= 20
    assert link.stats.published == link.stats.acked == 5_000
    assert link.stats.errors == 0
    wait_for(lambda: sink.count() == 5_000, timeout=20, what="all 5,000 delivered")
    sink.close()


def test_last_will_and_online_status(services: Services, prefix: str) -> None:
    """A device link publishes its retained online status; losing power makes the broker send its will."""
    status = f"{prefix}/dev-1/status"
    link = MqttLink(
        services.mqtt_url,
        will=Out(status, b'{"state":"offline"}', retain=True),
        on_connect_messages=[Out(status, b'{"state":"online"}', retain=True)],
    ).start()
    assert link.flush(5)
    sink = Sink(services, status)
    wait_for(lambda: sink.count() >= 1, what="retained online status")
    assert sink.got[0] == (status, b'{"state":"online"}', True)
    link.close(with_will=True)
    wait_for(lambda: sink.count() >= 2, what="last will")
    assert sink.got[-1][1] == b'{"state":"offline"}'
    sink.close()
    late = Sink(services, status)  # the will is retained: a subscriber arriving later learns it too
    wait_for(lambda: late.count() >= 1, what="retained will")
    assert late.got[0][1:] == (b'{"state":"offline"}', True)
    late.close()
    MqttLink(services.mqtt_url).start().close()  # (a clean link leaves no will)


def test_publisher_reconnects_and_loses_nothing(services: Services, prefix: str) -> None:
    """The connection drops mid-stream; paho reconnects, resends what was in flight, and the status is
    re-announced on the new connection."""
    sink = Sink(services, f"{prefix}/#")
    status = f"{prefix}/dev-2/status"
    link = MqttLink(
        services.mqtt_url, max_inflight=50, on_connect_messages=[Out(status, b'{"state":"online"}', retain=True)]
    ).start()
    try:
        for i in range(300):
            link.publish(Out(f"{prefix}/dev-2/telemetry", orjson.dumps({"seq": i, "gas_lel": 1})))
            if i == 150:
                sock = link.client.socket()
                assert sock is not None
                sock.close()  # the network goes away under the client
        wait_for(lambda: link.stats.reconnects >= 1, timeout=15, what="reconnect")
        assert link.flush(30), "everything in flight was resent and acknowledged"
    finally:
        link.close()
    wait_for(
        lambda: len({p for t, p, _r in sink.got if t.endswith("telemetry")}) == 300,
        timeout=20,
        what="all 300 readings delivered (duplicates allowed, losses not)",
    )
    assert sum(1 for t, _p, _r in sink.got if t == status) >= 2, "online re-announced after the reconnect"
    sink.close()


def test_unreachable_broker_is_an_error() -> None:
    with pytest.raises(PublishError, match="cannot reach"):
        MqttLink(f"mqtt://127.0.0.1:{free_port()}").start(timeout=2)
    with pytest.raises(PublishError, match="cannot reach"):
        FastLink(f"mqtt://127.0.0.1:{free_port()}").start()


def test_fastlink_wraps_packet_ids_without_losing_one(services: Services, prefix: str) -> None:
    """QoS-1 messages whose 16-bit packet ids wrap past 65,535, at most 200 in flight: every one arrives
    (paho 2.2 silently loses messages past 65,535 outstanding, STYLE.md). The id counter starts near the
    wrap so the test need not send 65k messages first."""
    sink = Sink(services, f"{prefix}/#")
    link = FastLink(services.mqtt_url, max_inflight=200).start()
    link._next_mid = 64_000
    peak = 0
    for i in range(5_000):
        assert link.publish(Out(f"{prefix}/f/telemetry", b"%d" % i))
        if i % 100 == 0:
            link.tick()
            peak = max(peak, link.inflight)
    assert link.close(flush_timeout=30)
    assert link._next_mid < 64_000, "the packet ids wrapped"
    assert peak <= 200
    assert link.stats.published == link.stats.acked == 5_000
    wait_for(lambda: len({p for _t, p, _r in sink.got}) == 5_000, timeout=20, what="all 5,000 delivered")
    sink.close()


def test_fastlink_reconnects_and_resends(services: Services, prefix: str) -> None:
    sink = Sink(services, f"{prefix}/#")
    link = FastLink(services.mqtt_url, max_inflight=100).start()
    for i in range(2_000):
        link.publish(Out(f"{prefix}/g/telemetry", b"%d" % i))
        if i % 50 == 0:
            link.tick()
        if i == 1_000:
            assert link._sock is not None
            link._sock.shutdown(2)  # the network goes away under the link
    assert link.close(flush_timeout=30), "everything in flight was resent after the reconnect and acknowledged"
    assert link.stats.reconnects >= 1
    wait_for(lambda: len({p for _t, p, _r in sink.got}) == 2_000, timeout=20, what="all 2,000 delivered")
    sink.close()


def test_fleet_publishes_at_a_steady_rate(services: Services, prefix: str) -> None:
    """300 synthetic devices at 400 msg/s for 1.5 s: about 600 messages, round-robin over the devices."""
    from simulators.formats import Topics

    sink = Sink(services, f"{prefix}/+/telemetry")
    devices = synthetic_devices(300, seed=4)
    fleet = Fleet(
        services.mqtt_url,
        devices,
        rate=400,
        duration_s=1.5,
        topics=Topics(native_prefix=prefix),
        progress=None,
        status=False,
    )
    summary = fleet.run()
    assert summary.ok
    assert 450 <= summary.sent <= 620, summary.lines()  # generous: this machine is shared
    wait_for(lambda: sink.count() == summary.sent, timeout=10, what="every fleet message delivered")
    senders = {t.split("/")[-2] for t, _p, _r in sink.got}
    assert len(senders) == min(300, summary.sent)
    sink.close()


def test_fleet_registry_file_loads(tmp_path: Path) -> None:
    devices = synthetic_devices(1_234, seed=2)
    path = tmp_path / "fleet.yaml"
    write_registry(devices, path)
    registry = read_registry(path)
    assert len(registry.devices) == 1_234
    assert {d.id for d in registry.devices} == {d.id for d in devices}
    assert len(registry.sites) == 124 and len(registry.workers) == 3
    assert synthetic_devices(50, seed=2) == devices[:50], "deterministic by seed"


def _gridwatch(*args: str, mqtt_url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRIDWATCH_MQTT_URL": mqtt_url, "GRIDWATCH_TOPIC_PREFIX": prefix}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "simulate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_simulate_command_runs_a_fleet_and_reports(services: Services, prefix: str, tmp_path: Path) -> None:
    sink = Sink(services, f"{prefix}/+/telemetry")
    done = _gridwatch(
        "--devices", "40", "--rate", "100", "--duration", "1s", "--seed", "3", mqtt_url=services.mqtt_url, prefix=prefix
    )
    assert done.returncode == 0, done.stderr
    assert "fleet: 40 devices" in done.stdout
    assert "errors: 0; unacknowledged: 0" in done.stdout
    assert "[simulate]" in done.stderr, "progress goes to stderr"
    sent = int(done.stdout.split("sent ")[1].split()[0])
    wait_for(lambda: sink.count() == sent, what="what the summary says was sent")
    sink.close()
    out = tmp_path / "reg.yaml"
    wrote = _gridwatch("--devices", "25", "--write-registry", str(out), mqtt_url=services.mqtt_url, prefix=prefix)
    assert wrote.returncode == 0, wrote.stderr
    assert len(read_registry(out).devices) == 25


def test_simulate_command_fails_without_a_broker(prefix: str) -> None:
    done = _gridwatch("--devices", "5", "--duration", "1s", mqtt_url=f"mqtt://127.0.0.1:{free_port()}", prefix=prefix)
    assert done.returncode != 0
    assert "cannot reach mqtt broker" in done.stderr


# --- the demo tour --------------------------------------------------------------------------------------
TOUR_REGISTRY = """\
community: {id: c1, name: Tour}
grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
workers: [{id: w1, name: W, role: micro_grid_worker, micro_grids: [mg1], notify: ["json://127.0.0.1:9/"]}]
sites: [{id: s1, kind: building, micro_grid: mg1}]
devices:
  - {id: gas-k, kind: gas_detector, site: s1, location: kitchen}
  - {id: sock-st, kind: smart_socket, site: s1, location: stairwell}
  - {id: smoke-c, kind: smoke_detector, site: s1, location: corridor, battery: true}
  - {id: gas-2, kind: gas_detector, site: s1, location: kitchen}
  - {id: co-1, kind: co_alarm, site: s1, location: room, battery: true}
"""


@pytest.fixture
def tour_services(settings: Settings) -> Iterator[Running]:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        core_repo.upsert_registry(conn, registry=parse_registry(TOUR_REGISTRY))
    running = start_services(settings, ("ingest", "rules"))
    wait_for(running.parts["ingest"].consumer.connected.is_set, what="ingest connected")
    yield running
    running.stop()


def test_tour_plan_picks_devices_by_kind_and_place() -> None:
    rows = [(d.id, d.kind.value, d.location.value) for d in parse_registry(TOUR_REGISTRY).devices]
    stories, background = tour.plan(rows)
    assert [(s.name, m) for s, m in stories] == [
        ("tour_kitchen_leak", {"leak": "gas-k"}),
        ("tour_stairwell_charge", {"socket": "sock-st"}),
        ("tour_offline", {"dying": "smoke-c"}),
    ]
    assert [d[0] for d in background] == ["gas-2", "co-1"]


def test_tour_leaks_within_seconds_and_stops_cleanly(
    settings: Settings, services: Services, tour_services: Running
) -> None:
    lines: list[str] = []
    stop = threading.Event()
    rows = [(d.id, d.kind.value, d.location.value) for d in parse_registry(TOUR_REGISTRY).devices]
    started = time.monotonic()
    thread = threading.Thread(
        target=tour.run_tour,
        args=(services.mqtt_url, settings.topic_prefix, rows, stop),
        kwargs={"say": lines.append},
        daemon=True,
    )
    thread.start()

    def alarm_types() -> set[str]:
        with psycopg.connect(settings.dsn) as conn:
            return {r[0] for r in conn.execute("SELECT type FROM alarm WHERE device_id = 'gas-k'").fetchall()}

    wait_for(lambda: "gas_leak" in alarm_types(), timeout=15, what="the tour's kitchen gas leak alarm")
    assert time.monotonic() - started < 10, "the leak shows within seconds of the start"
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the tour stops when told"
    assert lines[0].startswith("  ⚙ background")
    assert any("Kitchen gas leak" in line for line in lines)
    assert any("gas is building up" in line for line in lines)
