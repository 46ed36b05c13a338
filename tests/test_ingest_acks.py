"""Ingest acknowledges a committed batch with its PUBACKs queued as one write: the broker must take them all.

Proof through the broker: more messages than Receive Maximum get through (the broker sends no more than that
many unacknowledged), and a consumer resuming the same persistent session afterwards is sent nothing again.
"""

from __future__ import annotations

import time

import psycopg

from core.settings import Settings
from ingest.consumer import Inbox, MqttConsumer
from ingest.worker import IngestWorker, subscriptions
from tests.support import Publisher, wait_for


def count_readings(settings: Settings) -> int:
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM reading").fetchone()
        assert row is not None
        return int(row[0])


def test_batched_pubacks_release_the_broker_and_settle_the_session(loaded: Settings, publisher: Publisher) -> None:
    settings = loaded.model_copy(update={"batch_size": 20, "queue_size": 20})  # Receive Maximum 20
    total = 150
    worker = IngestWorker(settings)
    worker.start()
    try:
        wait_for(worker.consumer.connected.is_set, what="ingest connected")
        start = int(time.time() * 1000) - total
        for i in range(total):
            publisher.publish(
                f"{settings.topic_prefix}/gas-{1 + i % 2}/telemetry", {"ts": start + i, "seq": i, "gas_lel": 1.0}
            )
        wait_for(lambda: count_readings(settings) >= total, timeout=30, what="every reading stored")
        wait_for(lambda: worker.processed >= total, what="every message acknowledged")
    finally:
        worker.stop()
    assert count_readings(settings) == total

    # Resume the same session: a message the broker still held unacknowledged would be sent again now.
    out = Inbox(maxsize=10_000)
    again = MqttConsumer(
        settings.mqtt, client_id=settings.mqtt_client_id, topics=subscriptions(settings), out=out, receive_maximum=100
    )
    again.start()
    try:
        wait_for(again.connected.is_set, what="session resumed")
        time.sleep(1.0)
        redelivered = [m.topic for m in out.take(10_000, timeout=0)]
    finally:
        again.stop()
    assert redelivered == [], f"{len(redelivered)} messages came back: their PUBACKs did not reach the broker"
