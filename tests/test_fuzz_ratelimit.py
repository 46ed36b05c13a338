"""Issue 9: one broken device cannot flood the reject table (ingest/ratelimit.py), and readings are never
dropped by the limiter (DESIGN: a backlog is judged in event time as if it had arrived live)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
import pytest

from app.services import start_services
from core.domain import Reading
from core.settings import Settings
from ingest.ratelimit import SUPPRESSED, RateLimit
from tests.support import Publisher, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rejects(n: int, device: str | None = "dev-1", topic: str = "gw/v1/dev-1/telemetry") -> list[tuple[object, ...]]:
    return [(datetime.now(UTC), topic, b"x", device, f"malformed JSON: {i}") for i in range(n)]


@pytest.mark.parametrize(
    ("burst", "rate", "sent", "advance_s", "then", "stored_first", "stored_then"),
    [
        (5, 1.0, 3, 0, 0, 3, 0),  # under the burst: all stored
        (5, 1.0, 20, 0, 0, 5, 0),  # a flood: the burst is stored, the rest counted
        (5, 1.0, 20, 3, 10, 5, 3),  # 3 s later 3 tokens came back
        (5, 1.0, 20, 100, 10, 5, 5),  # refilled to the burst, never beyond
        (5, 0.5, 10, 4, 5, 5, 2),  # slower refill
    ],
)
def test_token_bucket(
    burst: float, rate: float, sent: int, advance_s: float, then: int, stored_first: int, stored_then: int
) -> None:
    clock = Clock()
    limit = RateLimit(rate_per_s=rate, burst=burst, clock=clock)
    assert len(limit.filter_rejects(rejects(sent))) == stored_first
    clock.now += advance_s
    assert len(limit.filter_rejects(rejects(then))) == stored_then


def test_summary_says_how_many_were_left_out() -> None:
    clock = Clock()
    limit = RateLimit(rate_per_s=1, burst=2, clock=clock)
    assert len(limit.filter_rejects(rejects(12))) == 2
    clock.now += 1
    (row,) = limit.filter_rejects(rejects(1))
    assert "[rate limit: 10 more rejects from this source were not stored since" in str(row[4])
    clock.now += 1
    (row,) = limit.filter_rejects(rejects(1))
    assert "rate limit" not in str(row[4]), "the summary is given once"


def test_sources_are_independent_and_the_total_is_bounded() -> None:
    clock = Clock()
    limit = RateLimit(rate_per_s=1, burst=3, total_rate_per_s=1, total_burst=10, clock=clock)
    assert len(limit.filter_rejects(rejects(50, device="broken"))) == 3
    assert len(limit.filter_rejects(rejects(2, device="other"))) == 2, "a broken device does not starve others"
    # random topics without a device each get a bucket, but all of them share the total
    stored = limit.filter_rejects([r for i in range(100) for r in rejects(1, device=None, topic=f"junk/{i}")])
    assert len(stored) == 10 - 3 - 2


def test_readings_are_counted_never_dropped() -> None:
    clock = Clock()
    limit = RateLimit(reading_rate_per_s=1, reading_burst=5, clock=clock)
    readings = [
        Reading(device_id="chatty", ts=datetime.now(UTC), received_at=datetime.now(UTC), seq=i) for i in range(50)
    ]
    assert limit.count_readings(readings) == 45
    assert len(readings) == 50
    clock.now += 2.0  # two tokens back at 1/s
    assert limit.count_readings(readings[:5]) == 3
    clock.now += 60.0  # refilled to the burst, never past it
    assert limit.count_readings(readings[:7]) == 2


def test_flooding_device_does_not_flood_the_reject_table(loaded: Settings, publisher: Publisher) -> None:
    """Real broker, real ingest: 300 broken messages from one device, then a real gas leak from another."""
    before = SUPPRESSED._value.get()
    running = start_services(loaded, ("ingest",))
    try:
        wait_for(running.parts["ingest"].consumer.connected.is_set, what="ingest connected")
        for _ in range(300):
            publisher.publish(f"{loaded.topic_prefix}/gas-1/telemetry", b"{not json", wait=False)
        now_ms = int(time.time() * 1000)  # a leak on two samples spanning 10 s (GAS-02, issue 19)
        for seq, ts in ((1, now_ms - 10_000), (2, now_ms)):
            publisher.publish(f"{loaded.topic_prefix}/gas-2/telemetry", {"ts": ts, "seq": seq, "gas_lel": 40})

        def count(sql: str) -> int:
            with psycopg.connect(loaded.dsn) as conn:
                row = conn.execute(sql).fetchone()
                return int(row[0]) if row else 0

        wait_for(
            lambda: count("SELECT count(*) FROM alarm WHERE device_id = 'gas-2'") == 1,
            what="the other device's gas alarm",
        )
        wait_for(
            lambda: SUPPRESSED._value.get() - before + count("SELECT count(*) FROM ingest_reject") >= 300,
            what="every broken message stored or counted",
        )
        stored = count("SELECT count(*) FROM ingest_reject WHERE device_id = 'gas-1'")
    finally:
        running.stop()
    suppressed = SUPPRESSED._value.get() - before
    print(f"RATELIMIT sent=300 stored_rejects={stored} suppressed={suppressed}")
    assert stored <= RateLimit().burst + 10, "the reject table holds the burst, not the flood"
    assert stored + suppressed == 300, "every broken message is either stored or counted"
