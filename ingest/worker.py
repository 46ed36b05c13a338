"""The ingest process: MQTT consumer + batch writer. Commit first, acknowledge after."""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg

from core.settings import Settings
from ingest import adapters
from ingest import repo as ingest_repo
from ingest import service as ingest_service
from ingest.consumer import MqttConsumer
from ingest.decode import Decoder, Limits, Message
from ingest.ratelimit import RateLimit
from rules.ruleset import RuleSet, default_rules

log = logging.getLogger(__name__)


def subscriptions(settings: Settings) -> list[str]:
    """Native topics plus every bridge adapter's, shared when a share group is set."""
    prefix = settings.topic_prefix
    topics = [f"{prefix}/+/telemetry", f"{prefix}/+/status", f"{prefix}/+/cmd/ack",
              *adapters.topics(settings.bridge_topic_root)]
    if settings.mqtt_share_group:
        topics = [f"$share/{settings.mqtt_share_group}/{t}" for t in topics]
    return topics


def make_decoder(settings: Settings) -> Decoder:
    """The decoder for these settings, with every bridge adapter."""
    limits = Limits(max_age=timedelta(hours=settings.max_reading_age_h),
                    max_skew=timedelta(seconds=settings.max_clock_skew_s),
                    max_payload_bytes=settings.max_payload_bytes)
    return Decoder(prefix=settings.topic_prefix, limits=limits, adapters=adapters.decoders(settings.bridge_topic_root))


# SQLSTATEs meaning the database will not take writes now, through no fault of the messages: a read-only
# transaction (standby, default_transaction_read_only), a revoked privilege, insufficient resources (53: disk
# full, out of memory, too many connections), system/I-O errors (58).
REFUSED_WRITE_STATES = frozenset({"25006", "42501"})
REFUSED_WRITE_CLASSES = frozenset({"53", "58"})


def refuses_writes(exc: psycopg.Error) -> bool:
    """Whether a database error is an outage to wait out rather than a message to reject."""
    state = exc.sqlstate or ""
    return state in REFUSED_WRITE_STATES or state[:2] in REFUSED_WRITE_CLASSES


class IngestWorker:
    """Runs until stop(): pulls batches off the queue, commits them, then acks them."""

    def __init__(self, settings: Settings, *, ruleset: RuleSet | None = None) -> None:
        self.settings = settings
        self.ruleset = ruleset or default_rules()
        self.decoder = make_decoder(settings)
        self.queue: queue.Queue[Message] = queue.Queue(maxsize=max(settings.queue_size, settings.batch_size))
        self.consumer = MqttConsumer(settings.mqtt, client_id=settings.mqtt_client_id,
                                     topics=subscriptions(settings), out=self.queue,
                                     receive_maximum=min(65535, settings.batch_size),
                                     ca_file=settings.mqtt_ca_file)
        self.devices = ingest_service.DeviceCache(conn_factory=None)
        self.limiter = RateLimit()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self.processed = 0

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.settings.dsn, autocommit=False)
            ingest_repo.prepare_connection(self._conn)
            self.devices.prime(self._conn)
            self._conn.commit()
        return self._conn

    def _next_batch(self) -> list[Message]:
        try:
            first = self.queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_linger_ms / 1000
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self.queue.get(timeout=remaining))
                except queue.Empty:
                    break
        return batch

    def _commit_batch(self, batch: list[Message]) -> None:
        """Retry a batch until the database takes it: unacknowledged messages are never lost."""
        delay = 0.5
        refusal_logged = False
        while not self._stop.is_set():
            try:
                conn = self._connection()
                ingest_service.process_batch(conn, messages=batch, decoder=self.decoder, devices=self.devices,
                                             ruleset=self.ruleset, limiter=self.limiter)
            except Exception as exc:
                if isinstance(exc, psycopg.OperationalError) or (isinstance(exc, psycopg.Error)
                                                                 and refuses_writes(exc)):
                    # Not the messages' fault: hold them unacknowledged (the broker keeps them) and retry on a
                    # fresh connection, which also picks up a database made writable again.
                    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    if refuses_writes(exc):
                        (log.warning if refusal_logged else log.error)(
                            "database refuses writes (%s: %s); holding %d messages unacknowledged at the broker, "
                            "retrying in %.1f s: make it writable (disk space, read-only mode, privileges)",
                            exc.sqlstate, why, len(batch), delay)
                        refusal_logged = True
                    else:
                        log.warning("database unavailable (%s); holding %d messages unacknowledged, retrying in "
                                    "%.1f s", why, len(batch), delay)
                    self._drop_connection()
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10)
                    continue
                # One message is to blame (the database refuses it, or a decoder or rules bug): it must not strand
                # the batch unacknowledged, holding Receive Maximum slots and failing again on every redelivery.
                # Retry one by one and keep the culprit as a reject.
                in_db = isinstance(exc, psycopg.Error)
                log.exception("batch of %d failed %s; retrying message by message", len(batch),
                              "in the database" if in_db else "outside the database")
                self._drop_connection()
                if len(batch) > 1:
                    for single in batch:
                        self._commit_batch([single])
                    return
                reason = ("internal error: the database refused it" if in_db
                          else f"internal error: {type(exc).__name__}: {exc}"[:300])
                try:
                    self._reject_poison(batch[0], reason=reason)
                except psycopg.Error:
                    log.warning("could not record the failing message as a reject; retrying it", exc_info=True)
                    self._drop_connection()
                    self._stop.wait(delay)
                    continue
            self.consumer.ack(batch)
            self.processed += len(batch)
            return

    def _reject_poison(self, msg: Message, *, reason: str) -> None:
        """A single message that fails for a reason other than the database being down: keep it as a reject."""
        conn = self._connection()
        with conn.transaction():
            ingest_repo.insert_rejects(conn, rejects=[(msg.received_at, msg.topic, msg.payload, None,
                                                               reason)])

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                log.debug("closing a broken connection failed", exc_info=True)
            self._conn = None

    def run(self) -> None:
        """The writer loop (blocks until stop())."""
        while not self._stop.is_set():
            if self.consumer.fatal is not None:
                self._stop.set()  # bad credentials: retrying cannot help; serve exits with the message
                return
            try:
                batch = self._next_batch()
                if batch:
                    self._commit_batch(batch)
            except Exception:
                log.exception("ingest writer loop failed; continuing")
                self._stop.wait(1)

    def start(self) -> None:
        """Prepare the database connection, connect to the broker, run the writer in a thread."""
        self._connection()
        self.consumer.start()
        self._thread = threading.Thread(target=self.run, name="ingest-writer", daemon=True)
        self._thread.start()

    @property
    def fatal(self) -> Exception | None:
        """Why this worker gave up, if it did."""
        return self.consumer.fatal

    def stop(self) -> None:
        """Stop consuming; whatever was not committed stays unacknowledged at the broker."""
        self.consumer.stop()
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._drop_connection()


