"""Issue 23, the ingest under attack from a device's credentials (findings 3 and 4, and the bounded inbox): real
Mosquitto, real PostgreSQL, the real ingest. Each test is named after the attack it stops."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from app.services import Running, start_services
from core.settings import Settings
from ingest import service as ingest_service
from ingest.decode import Message
from ingest.ratelimit import RateLimit
from ingest.worker import IngestWorker, make_decoder
from rules.ruleset import default_rules
from tests.support import Publisher, wait_for


def scalar(dsn: str, sql: str, *args: object) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return int(row[0] or 0)


def with_settings(settings: Settings, **changes: object) -> Settings:
    return Settings(_env_file=None, **{**settings.model_dump(), **changes})  # type: ignore[arg-type]


@pytest.fixture
def ingest(loaded: Settings) -> Iterator[Running]:
    running = start_services(loaded, ("ingest",))
    wait_for(running.parts["ingest"].consumer.connected.is_set, what="ingest connected")
    yield running
    running.stop()


# -- finding 3: a string from a device that the database cannot store fails its whole batch ------------------------

HOSTILE_ACKS = [
    ("nul in detail", {"id": "c-1", "ok": True, "detail": "done\u0000"}, "NUL"),
    ("nul in id", {"id": "c\u0000-2", "ok": False, "detail": ""}, "NUL"),
    ("detail of 10 kB", {"id": "c-3", "ok": True, "detail": "x" * 10_000}, "detail"),
    ("id of 1 kB", {"id": "c" * 1_000, "ok": True}, "id"),
    ("id not a string", {"id": 42, "ok": True}, "id"),
]


def test_nul_in_command_ack_cannot_fail_the_batch(
    loaded: Settings, ingest: Running, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """A command acknowledgement whose id or detail holds a NUL used to fail the batch it came in (up to 500
    messages, replayed one by one with an ERROR each). Now it is a reject with its reason at decode time, and the
    readings around it are stored in one batch (the test fails on any ERROR logged)."""
    prefix = loaded.topic_prefix
    now_ms = int(time.time() * 1000)
    for i in range(20):
        publisher.publish(f"{prefix}/gas-2/telemetry", {"seq": i, "ts": now_ms + i, "gas_lel": 1}, wait=False)
        if i % 4 == 0:
            _, ack, _ = HOSTILE_ACKS[(i // 4) % len(HOSTILE_ACKS)]
            publisher.publish(f"{prefix}/gas-1/cmd/ack", orjson.dumps(ack), wait=False)
    publisher.publish(f"{prefix}/gas-2/telemetry", {"seq": 99, "ts": now_ms + 99, "gas_lel": 1})
    wait_for(lambda: scalar(loaded.dsn, "SELECT count(*) FROM reading") == 21, what="the readings stored")
    wait_for(lambda: scalar(loaded.dsn, "SELECT count(*) FROM ingest_reject") == 5, what="the acks rejected")
    with psycopg.connect(loaded.dsn) as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM ingest_reject WHERE device_id = 'gas-1' ORDER BY id")]
    assert len(reasons) == 5
    for (what, _, words), reason in zip(HOSTILE_ACKS, reasons, strict=True):
        assert words in reason, f"{what}: {reason!r}"
    assert "one by one" not in caplog.text and "message by message" not in caplog.text


@pytest.mark.parametrize(("what", "ack", "words"), HOSTILE_ACKS, ids=[a[0] for a in HOSTILE_ACKS])
def test_hostile_command_ack_through_the_database(loaded: Settings, what: str, ack: object, words: str) -> None:
    """The decoder fuzz covered telemetry only: each hostile acknowledgement, in one batch with a good reading,
    is a reject with its reason and the reading is stored (the batch does not fail)."""
    now = datetime.now(UTC)
    good = Message(f"{loaded.topic_prefix}/gas-2/telemetry", b'{"gas_lel": 3, "seq": 1}', now)
    bad = Message(f"{loaded.topic_prefix}/gas-1/cmd/ack", orjson.dumps(ack), now)
    with psycopg.connect(loaded.dsn) as conn:
        devices = ingest_service.DeviceCache(conn_factory=None)
        devices.prime(conn)
        conn.commit()
        result = ingest_service.process_batch(
            conn, messages=[good, bad], decoder=make_decoder(loaded), devices=devices, ruleset=default_rules()
        )
        (reason,) = conn.execute("SELECT reason FROM ingest_reject").fetchone() or ("",)
    assert (result.stored, result.rejected) == (1, 1), what
    assert words in reason, f"{what}: {reason!r}"


# -- finding 4: rejects stored whole, without retention, and a per-source limit escaped by rotating topics ---------


def test_megabyte_junk_is_stored_as_a_bounded_excerpt(loaded: Settings, ingest: Running, publisher: Publisher) -> None:
    """A device's junk was stored whole (up to the broker's 1 MiB packet limit) in ingest_reject. Now a reject keeps
    an excerpt of GRIDWATCH_REJECT_EXCERPT_BYTES and the size the message had; a long invented topic is bounded too."""
    prefix = loaded.topic_prefix
    junk = b"\x00junk" * 100_000  # 500 kB
    publisher.publish(f"{prefix}/gas-1/telemetry", junk)
    publisher.publish(f"{prefix}/{'x' * 20_000}/telemetry", b"{}")
    wait_for(lambda: scalar(loaded.dsn, "SELECT count(*) FROM ingest_reject") == 2, what="two rejects")
    with psycopg.connect(loaded.dsn) as conn:
        rows = conn.execute(
            "SELECT octet_length(payload), payload_bytes, length(topic), length(reason) FROM ingest_reject "
            "ORDER BY payload_bytes DESC"  # the two devices' lanes may commit in either order (ingest.lanes)
        ).fetchall()
    (stored, size, _, _), (_, _, topic_chars, reason_chars) = rows
    print(f"REJECT excerpt={stored} of {size} bytes; topic kept {topic_chars} of 20,000+ characters")
    assert stored == loaded.reject_excerpt_bytes and size == len(junk)
    assert topic_chars <= 512 and reason_chars <= 1_000


@pytest.mark.parametrize("rotating", ["zigbee2mqtt names", "unregistered native ids"])
def test_rotating_topics_cannot_hide_another_devices_rejects(
    loaded: Settings, publisher: Publisher, rotating: str
) -> None:
    """Invented names under a bridge's base topic each got a reject budget of their own and together exhausted the
    global one, so the next device's rejects were no longer stored. Now they share the account's budget (the
    whole Zigbee2MQTT base) and another device's reject still lands. The limits are made small to keep the test
    short; the proportions are the shipped ones (per source far below the total)."""
    root = f"t{uuid.uuid4().hex[:8]}"
    s = with_settings(loaded, bridge_topic_root=root)
    running = start_services(s, ("ingest",))
    worker: IngestWorker = running.parts["ingest"]
    worker.limiter = RateLimit(rate_per_s=0.01, burst=20, total_rate_per_s=0.01, total_burst=100)
    try:
        wait_for(worker.consumer.connected.is_set, what="ingest connected")
        for _ in range(150):
            topic = (
                f"{root}/zigbee2mqtt/{uuid.uuid4().hex}"
                if rotating == "zigbee2mqtt names"
                else f"{s.topic_prefix}/ghost-{uuid.uuid4().hex[:12]}/telemetry"
            )
            publisher.publish(topic, b'{"gas": true}', wait=False)
        publisher.publish(f"{s.topic_prefix}/gas-2/telemetry", b"{not json")
        wait_for(lambda: worker.processed >= 151, timeout=30, what="all 151 messages processed")
        other = scalar(s.dsn, "SELECT count(*) FROM ingest_reject WHERE device_id = 'gas-2'")
        stored = scalar(s.dsn, "SELECT count(*) FROM ingest_reject WHERE device_id IS DISTINCT FROM 'gas-2'")
    finally:
        running.stop()
    print(f"RATELIMIT {rotating}: 150 sent, {stored} stored; the other device's reject stored={other}")
    assert stored <= 20, "invented topics share their account's budget"
    assert other == 1, "another device's reject must still be stored"


def test_rejects_expire_and_stay_within_their_row_budget(loaded: Settings) -> None:
    """ingest_reject had no retention and no budget. Now the ingest deletes rejects past
    GRIDWATCH_REJECT_RETENTION_DAYS and beyond GRIDWATCH_REJECT_MAX_ROWS (the oldest first)."""
    now = datetime.now(UTC)
    with psycopg.connect(loaded.dsn) as conn, conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO ingest_reject (received_at, topic, payload, reason) VALUES (%s, 'x', '', 'old')",
            [(now - timedelta(days=40),)] * 30,
        )
        conn.cursor().executemany(
            "INSERT INTO ingest_reject (received_at, topic, payload, reason) VALUES (%s, 'x', '', %s)",
            [(now - timedelta(minutes=100 - i), f"recent {i}") for i in range(100)],
        )
    s = with_settings(loaded, reject_retention_days=30, reject_max_rows=60)
    running = start_services(s, ("ingest",))
    try:
        wait_for(lambda: scalar(s.dsn, "SELECT count(*) FROM ingest_reject") == 60, timeout=20, what="the budget kept")
    finally:
        running.stop()
    assert scalar(s.dsn, "SELECT count(*) FROM ingest_reject WHERE reason = 'old'") == 0
    kept = scalar(s.dsn, "SELECT count(*) FROM ingest_reject WHERE reason IN ('recent 40', 'recent 99')")
    assert kept == 2 and scalar(s.dsn, "SELECT count(*) FROM ingest_reject WHERE reason = 'recent 39'") == 0


# -- the inbox: bounded in messages, but not in bytes ---------------------------------------------------------------


def test_large_payload_flood_cannot_exhaust_ingest_memory(loaded: Settings, publisher: Publisher) -> None:
    """Receive Maximum counts messages, so the broker could hand the ingest thousands of messages of up to 1 MiB
    at once, all held in memory on their way to being rejected. The inbox is now bounded in payload bytes too
    (GRIDWATCH_QUEUE_BYTES): the network thread waits, the broker keeps the rest, and nothing is lost."""
    s = with_settings(loaded, queue_bytes=1024 * 1024)
    held = IngestWorker(s)
    held.consumer.start()  # the network side only: no writer takes from the inbox
    payload = b"x" * 200_000
    try:
        wait_for(held.consumer.connected.is_set, what="consumer connected")
        for _ in range(30):
            publisher.publish(f"{s.topic_prefix}/gas-1/telemetry", payload, wait=False)
        publisher.publish(f"{s.topic_prefix}/gas-1/telemetry", payload)
        time.sleep(2.0)
        in_memory = held.lanes.held_bytes()
    finally:
        held.consumer.stop()
    print(f"INBOX bytes held={in_memory:,} (bound 1,048,576 + one message) of 31 x 200,000 sent")
    assert in_memory <= 1024 * 1024 + len(payload)
    # The rest waited at the broker: a running ingest takes all of it (too large: rejects, none lost).
    running = start_services(s, ("ingest",))
    try:
        wait_for(lambda: scalar(s.dsn, "SELECT count(*) FROM ingest_reject") == 31, timeout=30, what="all 31 rejected")
    finally:
        running.stop()


# -- a failure while recording a reject ------------------------------------------------------------------------------

REFUSE_POISON = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.topic LIKE '%poison-dev%' THEN
        RAISE EXCEPTION 'reject of % refused (an operator''s trigger)', NEW.topic;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON ingest_reject FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


@pytest.mark.allow_error_logs  # the message that cannot be recorded is logged at ERROR, as it should be
def test_failing_reject_record_cannot_stall_the_ingest(
    loaded: Settings, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """When a poison message could not be recorded as a reject, the writer retried it for ever: its batch was never
    acknowledged and every later batch waited behind it while the process looked alive. Now a second try keeps
    the topic and reason only, and failing that the message is logged at ERROR and acknowledged."""
    with psycopg.connect(loaded.dsn) as conn, conn.transaction():
        conn.execute(REFUSE_POISON)  # type: ignore[arg-type]
    running = start_services(loaded, ("ingest",))
    worker: IngestWorker = running.parts["ingest"]
    try:
        wait_for(worker.consumer.connected.is_set, what="ingest connected")
        publisher.publish(f"{loaded.topic_prefix}/poison-dev/telemetry", b'{"gas_lel": 1}')
        publisher.publish(f"{loaded.topic_prefix}/gas-2/telemetry", {"seq": 1, "gas_lel": 2})
        wait_for(
            lambda: scalar(loaded.dsn, "SELECT count(*) FROM reading WHERE device_id = 'gas-2'") == 1,
            timeout=20,
            what="the reading behind the poison message stored",
        )
        wait_for(lambda: worker.processed >= 2, what="both messages acknowledged")
        assert worker.alive
    finally:
        running.stop()
    assert "could not be recorded as a reject either" in caplog.text
