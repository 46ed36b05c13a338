"""Issue 8: one ingest process runs several writer threads and receives through a cheaper paho path; issue 18: each
writer has its own lane of devices (ingest.lanes). Shown here: a device stays in one lane, PUBACKs leave in arrival
order whatever order the lanes commit in, a burst on one device through two writers is evaluated reading by reading
in order, and the receive path delivers exactly what stock paho delivers (properties, retained flags, big
payloads)."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.services import YOUNG_GC_THRESHOLD, settle_heap
from core import repo as core_repo
from core.registry import parse_registry
from core.settings import MqttTarget, Settings
from ingest.consumer import Inbox, MqttConsumer, ReceiveClient, StockClient, fast_path_problem
from ingest.decode import Message
from ingest.lanes import AckOrder, Lanes
from ingest.worker import IngestWorker
from rules import service as rules_service
from tests.conftest import ROOT
from tests.support import Publisher, wait_for


def _arrivals(topics: list[str]) -> list[Message]:
    now = datetime.now(UTC)
    return [Message(topic=t, payload=b"{}", received_at=now, mid=i + 1) for i, t in enumerate(topics)]


def test_lanes_acknowledge_in_arrival_order_whatever_order_the_lanes_commit_in() -> None:
    """Three lanes commit their batches in a random order and at random sizes; a message is acknowledged only once
    it and every message that arrived before it are committed, and then in arrival order (MQTT 5 section 4.6)."""
    acked: list[int] = []
    committed: set[int] = set()

    def ack(messages: list[Message]) -> None:
        for m in messages:
            assert all(n in committed for n in range(m.arrival + 1)), "never ahead of an uncommitted message"
            acked.append(m.mid)

    order = AckOrder(ack)
    lanes = Lanes(3, prefix="gw/v1", maxsize=10_000, max_bytes=None, order=order)
    rng = random.Random(18)
    topics = [f"gw/v1/d{rng.randrange(40)}/{rng.choice(['telemetry', 'status'])}" for _ in range(900)]
    topics += ["zigbee2mqtt/kitchen"] * 30
    rng.shuffle(topics)
    for start in range(0, len(topics), 37):  # network reads of 37 messages
        lanes.put_many(_arrivals(topics)[start : start + 37])
    backlog = [inbox.take(10_000, timeout=0.1) for inbox in lanes.inboxes]
    assert sum(len(b) for b in backlog) == len(topics)
    assert not lanes.inboxes[1].items() and not lanes.inboxes[2].items()
    assert all(m.topic.startswith("gw/v1/") for m in backlog[1] + backlog[2]), "bridge traffic keeps lane 0"
    for lane in backlog:  # a device stays in one lane, in arrival order
        assert [m.arrival for m in lane] == sorted(m.arrival for m in lane)
    devices = [{m.topic.split("/")[2] for m in lane if m.topic.startswith("gw/")} for lane in backlog]
    assert not (devices[0] & devices[1]) and not (devices[1] & devices[2]) and not (devices[0] & devices[2])
    while any(backlog):
        lane = rng.choice([b for b in backlog if b])
        n = rng.randint(1, 50)
        batch, lane[:] = lane[:n], lane[n:]
        committed.update(m.arrival for m in batch)
        order.committed(batch)
    assert len(acked) == len(topics) and order.waiting() == 0


def test_a_slow_lane_holds_back_later_acknowledgements_not_later_work() -> None:
    acked: list[str] = []
    order = AckOrder(lambda ms: acked.extend(m.topic for m in ms))
    lanes = Lanes(2, prefix="gw/v1", maxsize=100, max_bytes=None, order=order)
    first, second = (
        (t for t in (f"gw/v1/dev-{i}/telemetry" for i in range(50)) if lanes.lane_of(t) == 0),
        (t for t in (f"gw/v1/dev-{i}/telemetry" for i in range(50)) if lanes.lane_of(t) == 1),
    )
    slow, fast = next(first), next(second)
    lanes.put_many(_arrivals([slow, fast, fast]))
    slow_batch = lanes.inboxes[0].take(10, timeout=0.1)
    fast_batch = lanes.inboxes[1].take(10, timeout=0.1)
    assert len(fast_batch) == 2, "the other lane's work is there to do at once"
    assert order.committed(fast_batch) == 0 and acked == [] and order.waiting() == 2
    assert order.committed(slow_batch) == 3 and acked == [slow, fast, fast]


def test_lanes_share_the_inbox_bounds_and_hold_the_network_thread_when_one_is_full() -> None:
    order = AckOrder(lambda _ms: None)
    lanes = Lanes(2, prefix="gw/v1", maxsize=10, max_bytes=None, order=order, min_size=4)
    assert [i.maxsize for i in lanes.inboxes] == [5, 5]
    lane0 = next(t for t in (f"gw/v1/d{i}/telemetry" for i in range(50)) if lanes.lane_of(t) == 0)
    lanes.put_many(_arrivals([lane0] * 5))
    blocked = threading.Thread(target=lambda: lanes.put_many(_arrivals([lane0])), daemon=True)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a full lane holds the network thread (the broker keeps the rest)"
    lanes.inboxes[0].take(5, timeout=0.1)
    blocked.join(2)
    assert not blocked.is_alive() and lanes.qsize() == 1


REGISTRY = textwrap.dedent("""\
    community: {id: c1, name: C}
    grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
    sites: [{id: s1, kind: shop, micro_grid: mg1, name: Shop}]
    devices:
      - {id: sock-1, kind: smart_socket, site: s1, location: storage, report_interval_s: 60}
      - {id: sock-2, kind: smart_socket, site: s1, location: storage, report_interval_s: 60}
    """)


@pytest.fixture
def two_writers(settings: Settings) -> Iterator[IngestWorker]:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        core_repo.upsert_registry(conn, registry=parse_registry(REGISTRY))
    small = settings.model_copy(update={"batch_size": 20, "ingest_writers": 2, "batch_linger_ms": 1})
    worker = IngestWorker(small)
    worker.start()
    wait_for(worker.consumer.connected.is_set, what="ingest connected")
    yield worker
    worker.stop()


def test_a_burst_on_one_device_is_evaluated_in_order_by_two_writers(
    two_writers: IngestWorker, publisher: Publisher
) -> None:
    settings = two_writers.settings
    late_before = rules_service.LATE_READINGS._value.get()
    base = int(time.time() * 1000) - 3_600_000
    n = 600
    # sock-1: an e-bike charging in a storage room (EB-14b needs 30 min of 60-400 W in event time), one reading
    # every 5 s; sock-2 interleaved, idle. 50 batches of 20 go through the two writers.
    for i in range(n):
        publisher.publish(
            f"{settings.topic_prefix}/sock-1/telemetry",
            {"ts": base + i * 5000, "seq": i, "power_w": 150.0, "relay": "on"},
            wait=False,
        )
        if i % 3 == 0:
            publisher.publish(
                f"{settings.topic_prefix}/sock-2/telemetry",
                {"ts": base + i * 5000, "seq": i, "power_w": 0.5, "relay": "on"},
                wait=False,
            )

    def state() -> tuple[Any, ...] | None:
        with psycopg.connect(settings.dsn) as conn:
            return conn.execute("SELECT last_seq FROM device_state WHERE device_id = 'sock-1'").fetchone()

    wait_for(lambda: state() == (n - 1,), timeout=30, what="every reading of sock-1 evaluated")
    assert rules_service.LATE_READINGS._value.get() == late_before, "no reading lost its turn to a newer one"
    with psycopg.connect(settings.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM reading").fetchone() == (n + n // 3,)
        alarms = conn.execute("SELECT device_id, type, raised_at FROM alarm").fetchall()
    assert [(a[0], a[1]) for a in alarms] == [("sock-1", "ebike_indoor_charging")]
    assert alarms[0][2].timestamp() == (base + 1_800_000) / 1000, "raised 30 min into the session, in event time"
    assert two_writers.processed == n + n // 3


def _drain(
    client_cls: type[mqtt.Client],
    port: int,
    topic: str,
    expected: int,
    *,
    batches: bool = False,
    protocol: int = mqtt.MQTTv5,
) -> list[tuple[str, bytes, bool]]:
    got: list[tuple[str, bytes, bool]] = []
    done = threading.Event()

    def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        c.ack(msg.mid, msg.qos)
        if len(got) >= expected:
            done.set()

    def on_batch(messages: list[Message]) -> None:
        for m in messages:
            got.append((m.topic, m.payload, m.retain))
            client.ack(m.mid, m.qos)
        if len(got) >= expected:
            done.set()

    # manual_ack, as ingest runs it: ReceiveClient's own PUBLISH decoding applies only then.
    client = client_cls(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"rx-{time.time_ns()}", protocol=protocol, manual_ack=True
    )
    if batches:
        assert isinstance(client, ReceiveClient)
        client.on_batch = on_batch
    else:
        client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        assert done.wait(20), f"{client_cls.__name__} got {len(got)} of {expected}"
    finally:
        client.loop_stop()
        client.disconnect()
    return got


def test_receive_path_delivers_what_stock_paho_delivers(services: Any, settings: Settings) -> None:
    """Retained messages, user properties and topic-less aliases fall back to paho's own decoding; big payloads
    span several 64 KiB reads; QoS 0 and 1 mixed."""
    prefix = settings.topic_prefix
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.time_ns()}", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", services.mqtt_port)
    pub.loop_start()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("origin", "bridge")
    sent: list[tuple[str, bytes]] = []
    for i in range(300):
        topic = f"{prefix}/dev-{i % 7}/telemetry"
        payload = (b'{"seq": %d, "pad": "' % i) + b"x" * (200_000 if i % 97 == 0 else i) + b'"}'
        info = pub.publish(topic, payload, qos=i % 2, retain=(i == 5), properties=props if i % 5 == 0 else None)
        info.wait_for_publish(10)
        sent.append((topic, payload))
    ours = _drain(ReceiveClient, services.mqtt_port, f"{prefix}/+/telemetry", 1)  # the retained one, first
    batched = _drain(ReceiveClient, services.mqtt_port, f"{prefix}/+/telemetry", 1, batches=True)
    stock = _drain(mqtt.Client, services.mqtt_port, f"{prefix}/+/telemetry", 1)
    assert ours == batched == stock == [(sent[5][0], sent[5][1], True)]
    # live traffic, compared message by message
    results: dict[str, list[tuple[str, bytes, bool]]] = {}

    def collect(cls: type[mqtt.Client], key: str) -> None:
        # MQTT 3.1.1 has no property length in a PUBLISH: the batch decoder must leave those packets to paho
        results[key] = _drain(
            cls,
            services.mqtt_port,
            f"{prefix}/live/+",
            300,
            batches=key.startswith("batches"),
            protocol=mqtt.MQTTv311 if key == "batches-3.1.1" else mqtt.MQTTv5,
        )

    threads = [
        threading.Thread(target=collect, args=(cls, key))
        for cls, key in (
            (ReceiveClient, "ReceiveClient"),
            (ReceiveClient, "batches"),
            (ReceiveClient, "batches-3.1.1"),
            (mqtt.Client, "Client"),
        )
    ]
    for th in threads:
        th.start()
    time.sleep(0.5)
    for i in range(300):
        payload = b"y" * (150_000 if i % 50 == 0 else 10 + i)
        if i % 10 == 3:
            payload = b"\x00" + payload  # read as a property length of 0 it would lose its first byte
        pub.publish(f"{prefix}/live/{i % 3}", payload, qos=i % 2, properties=props if i % 4 == 0 else None)
    for th in threads:
        th.join(timeout=30)
    pub.loop_stop()
    pub.disconnect()
    assert results["ReceiveClient"] == results["Client"]
    assert results["batches"] == results["Client"]
    assert results["batches-3.1.1"] == results["Client"]
    assert len(results["ReceiveClient"]) == 300


@pytest.mark.parametrize("client_cls", [ReceiveClient, StockClient], ids=["fast path", "stock fallback"])
def test_consumer_with_manual_ack_gets_a_backlog_in_order(
    services: Any, settings: Settings, client_cls: type[mqtt.Client]
) -> None:
    """Under manual ack, with the fast path and with the stock-paho fallback (a paho whose private names the fast
    path does not know): a queued backlog arrives complete and in order, and what was acknowledged is gone."""
    client_id = f"backlog-{time.time_ns()}"
    topic = f"{settings.topic_prefix}/+/telemetry"
    target = MqttTarget(f"mqtt://127.0.0.1:{services.mqtt_port}")
    out = Inbox(maxsize=5000)

    def consumer() -> MqttConsumer:
        return MqttConsumer(
            target, client_id=client_id, topics=[topic], out=out, receive_maximum=1000, client_cls=client_cls
        )

    first = consumer()
    first.start()
    wait_for(first.connected.is_set, what="connected")
    first.stop()  # the session stays, queueing
    pub = Publisher("127.0.0.1", services.mqtt_port)
    for i in range(3000):
        pub.publish(f"{settings.topic_prefix}/d{i % 5}/telemetry", b'{"seq": %d}' % i, wait=i % 500 == 499)
    pub.close()
    second = consumer()
    second.start()
    assert isinstance(second.client, client_cls)
    got: list[bytes] = []
    while len(got) < 3000:
        batch = out.take(500, timeout=20)
        assert batch, f"only {len(got)} of 3000 arrived"
        got += [m.payload for m in batch]
        assert second.ack(batch) == len(batch)
    time.sleep(0.5)  # the last PUBACKs leave the network thread
    second.stop()
    assert got == [b'{"seq": %d}' % i for i in range(3000)], "every payload, byte for byte, in order"
    third = consumer()
    third.start()
    wait_for(third.connected.is_set, what="reconnected")
    assert out.take(500, timeout=1.5) == [], "acknowledged messages are not redelivered"
    third.stop()


@pytest.mark.slow
def test_fast_path_check_finds_what_paho_2_1_lacks(tmp_path: Path) -> None:
    """On paho-mqtt 2.1 (allowed before the pin) the fast path's private names are not all there: the check says
    which, and the consumer takes stock paho with one warning instead of silently breaking keepalive."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "paho-mqtt==2.1.0", "-d", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with zipfile.ZipFile(next(tmp_path.glob("paho_mqtt-2.1.0-*.whl"))) as wheel:
        wheel.extractall(tmp_path / "site")
    probe = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING); "
        f"sys.path.insert(0, {str(tmp_path / 'site')!r}); "
        "import paho.mqtt; from ingest import consumer; print(paho.mqtt.__version__); "
        "print(consumer.receive_client_class().__name__); consumer.receive_client_class()"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["2.1.0", "StockClient"], result.stdout
    assert result.stderr.count("lacks _last_bytes_received") == 1, result.stderr
    assert fast_path_problem() is None, "the pinned paho has everything the fast path uses"


def _messages(start: int, n: int) -> list[Message]:
    return [
        Message(topic=f"t/{i}", payload=b"%d" % i, received_at=datetime.now(UTC), mid=i)
        for i in range(start, start + n)
    ]


def test_inbox_hands_over_in_order_and_holds_the_network_thread_when_full() -> None:
    inbox = Inbox(maxsize=10)
    assert inbox.take(5, timeout=0.05) == [], "nothing came: an empty batch after the timeout"
    inbox.put_many(_messages(0, 12))  # one network read may pass the bound
    second_read_in = threading.Event()

    def network_thread() -> None:
        inbox.put_many(_messages(12, 3))
        second_read_in.set()

    thread = threading.Thread(target=network_thread, daemon=True)
    thread.start()
    assert not second_read_in.wait(0.3), "a full inbox holds the network thread"
    assert [m.mid for m in inbox.take(4, timeout=1)] == [0, 1, 2, 3]
    assert [m.mid for m in inbox.take(4, timeout=1)] == [4, 5, 6, 7]  # below the bound now
    assert second_read_in.wait(2), "room again: the held read goes in"
    assert [m.mid for m in inbox.take(100, timeout=1)] == list(range(8, 15)), "the rest, in arrival order"
    assert inbox.empty()

    started = time.monotonic()
    later = threading.Timer(0.1, lambda: inbox.put_many(_messages(20, 2)))
    later.start()
    inbox.put_many(_messages(15, 1))
    batch = inbox.take(3, timeout=1, linger=1.0)
    assert [m.mid for m in batch] == [15, 20, 21], "lingers for a batch to fill, returns once it is full"
    assert time.monotonic() - started < 0.9


def test_settle_heap_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    """What `serve` does once its parts run (bench/: full collections walking the device cache cost ~15 % of
    the ingest's CPU). Restored afterwards: the test process keeps Python's defaults."""
    threshold = gc.get_threshold()
    cache = [{"device": i} for i in range(10_000)]  # like the device cache: built at start-up, kept for good
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(cache), "start-up objects are out of the collector's way"
        assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD
        assert gc.get_threshold()[1:] == threshold[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
