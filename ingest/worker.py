"""The ingest process: MQTT consumer + batch writer. Commit first, acknowledge after."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from prometheus_client import Counter

from core.domain import Device
from core.loop import Check, Loop
from core.settings import Settings
from ingest import adapters
from ingest import repo as ingest_repo
from ingest import service as ingest_service
from ingest.consumer import MqttConsumer
from ingest.decode import Decoder, Limits, Message
from ingest.lanes import AckOrder, Lanes
from ingest.ratelimit import RateLimit
from rules.ruleset import RuleSet, rules_in_force

log = logging.getLogger(__name__)


def subscriptions(settings: Settings) -> list[str]:
    """Native topics plus every bridge adapter's, shared when a share group is set."""
    prefix = settings.topic_prefix
    topics = [
        f"{prefix}/+/telemetry",
        f"{prefix}/+/status",
        f"{prefix}/+/cmd/ack",
        *adapters.topics(adapters.bases(settings)),
    ]
    if settings.mqtt_share_group:
        topics = [f"$share/{settings.mqtt_share_group}/{t}" for t in topics]
    return topics


def device_subscriptions(settings: Settings, devices: list[Device]) -> list[str]:
    """Subscriptions only some registered devices need (Zigbee2MQTT friendly names with a '/'), shared as above."""
    topics = adapters.device_topics(devices, adapters.bases(settings))
    if settings.mqtt_share_group:
        topics = [f"$share/{settings.mqtt_share_group}/{t}" for t in topics]
    return topics


def make_decoder(settings: Settings) -> Decoder:
    """The decoder for these settings, with every bridge adapter."""
    limits = Limits(
        max_age=timedelta(hours=settings.max_reading_age_h),
        max_skew=timedelta(seconds=settings.max_clock_skew_s),
        max_payload_bytes=settings.max_payload_bytes,
    )
    return Decoder(prefix=settings.topic_prefix, limits=limits, adapters=adapters.decoders(adapters.bases(settings)))


# SQLSTATEs meaning the database will not take writes now, through no fault of the messages: a read-only
# transaction (standby, default_transaction_read_only), a revoked privilege, insufficient resources (53: disk
# full, out of memory, too many connections), system/I-O errors (58).
REFUSED_WRITE_STATES = frozenset({"25006", "42501"})
REFUSED_WRITE_CLASSES = frozenset({"53", "58"})


def refuses_writes(exc: psycopg.Error) -> bool:
    """Whether a database error is an outage to wait out rather than a message to reject."""
    state = exc.sqlstate or ""
    return state in REFUSED_WRITE_STATES or state[:2] in REFUSED_WRITE_CLASSES


def is_outage(exc: BaseException) -> bool:
    """Whether a failure is the database's (away, refusing writes, or a deadlock or serialization failure: class
    40) and retrying later can succeed, rather than the message's."""
    if isinstance(exc, psycopg.OperationalError):
        return True
    return isinstance(exc, psycopg.Error) and (refuses_writes(exc) or (exc.sqlstate or "")[:2] == "40")


UNRECORDED = Counter(
    "gridwatch_ingest_unrecorded_total",
    "Messages that failed and could not be recorded as rejects either (logged at ERROR, acknowledged)",
)


class IngestWorker:
    """Runs until stop(): each writer thread pulls batches off its lane, commits them, and releases them for
    acknowledgement in arrival order (ingest.lanes)."""

    def __init__(self, settings: Settings, *, ruleset: RuleSet | None = None) -> None:
        self.settings = settings
        self.ruleset = ruleset or rules_in_force(settings.rules_file)
        self.decoder = make_decoder(settings)
        self.writers = settings.ingest_writers
        # Every writer holds a full batch unacknowledged and two more batches wait in the lanes, so a writer that
        # has just committed finds its next batch there instead of waiting for the broker to send it (the
        # measured effect is in docs/scaling.md).
        window = settings.batch_size * (self.writers + 2)
        self.order = AckOrder(self._ack)
        self.lanes = Lanes(
            self.writers,
            prefix=settings.topic_prefix,
            maxsize=max(settings.queue_size, window),
            max_bytes=settings.queue_bytes,
            order=self.order,
            min_size=settings.batch_size,
        )
        self.consumer = MqttConsumer(
            settings.mqtt,
            client_id=settings.mqtt_client_id,
            topics=subscriptions(settings),
            out=self.lanes,
            receive_maximum=min(65535, window),
            ca_file=settings.mqtt_ca_file,
        )
        self.devices = ingest_service.DeviceCache(conn_factory=None)
        self.limiter = RateLimit()
        self._stop = threading.Event()
        self.loops: list[Loop[Any]] = []
        self._local = threading.local()  # each writer thread's own database connection
        self._conns: list[psycopg.Connection[Any]] = []
        self._primed = False

    @property
    def _conn(self) -> psycopg.Connection[Any] | None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.settings.dsn, autocommit=False)
            ingest_repo.prepare_connection(conn)
            if not self._primed:
                self.devices.prime(conn)
                self._primed = True
            conn.commit()
            self._local.conn = conn
            # Kept for stop(); a connection dropped after an outage is closed already and forgotten here.
            self._conns = [c for c in self._conns if not c.closed] + [conn]
        return conn

    def _next_batch(self, lane: int) -> list[Message]:
        return self.lanes.inboxes[lane].take(
            self.settings.batch_size, timeout=0.2, linger=self.settings.batch_linger_ms / 1000
        )

    def _ack(self, messages: list[Message]) -> None:
        self.consumer.ack(messages)

    def _commit_batch(self, batch: list[Message]) -> bool:
        """Retry a batch until the database takes it: unacknowledged messages are never lost. False if the
        worker stopped first (the messages stay unacknowledged at the broker)."""
        delay = 0.5
        refusal_logged = False
        while not self._stop.is_set():
            try:
                conn = self._connection()
                ingest_service.process_batch(
                    conn,
                    messages=batch,
                    decoder=self.decoder,
                    devices=self.devices,
                    ruleset=self.ruleset,
                    limiter=self.limiter,
                    reject_excerpt_bytes=self.settings.reject_excerpt_bytes,
                )
            except Exception as exc:
                if isinstance(exc, psycopg.OperationalError) or (
                    isinstance(exc, psycopg.Error) and refuses_writes(exc)
                ):
                    # Not the messages' fault: hold them unacknowledged (the broker keeps them) and retry on a
                    # fresh connection, which also picks up a database made writable again.
                    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    if refuses_writes(exc):
                        (log.warning if refusal_logged else log.error)(
                            "database refuses writes (%s: %s); holding %d messages unacknowledged at the broker, "
                            "retrying in %.1f s: make it writable (disk space, read-only mode, privileges)",
                            exc.sqlstate,
                            why,
                            len(batch),
                            delay,
                        )
                        refusal_logged = True
                    else:
                        log.warning(
                            "database unavailable (%s); holding %d messages unacknowledged, retrying in %.1f s",
                            why,
                            len(batch),
                            delay,
                        )
                    self._drop_connection()
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10)
                    continue
                # One message is to blame (the database refuses it, or a decoder or rules bug): it must not strand
                # the batch unacknowledged, holding Receive Maximum slots and failing again on every redelivery.
                # Retry one by one and keep the culprit as a reject.
                in_db = isinstance(exc, psycopg.Error)
                log.exception(
                    "batch of %d failed %s; retrying message by message",
                    len(batch),
                    "in the database" if in_db else "outside the database",
                )
                self._drop_connection()
                if len(batch) > 1:
                    return all(self._commit_batch([single]) for single in batch)
                reason = (
                    "internal error: the database refused it"
                    if in_db
                    else f"internal error: {type(exc).__name__}: {exc}"[:300]
                )
                if not self._record_poison(batch[0], reason=reason):
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10)
                    continue
            return True
        return False

    def _record_poison(self, msg: Message, *, reason: str) -> bool:
        """Keep a message that failed on its own as a reject. True once it is accounted for, so its batch can be
        acknowledged; False while the database is away (the caller retries).

        Recording can fail too (a trigger or constraint an operator added, a bug in the bounding of what is
        stored): then a second try keeps only the topic and the reason, and if that fails as well the message is
        logged at ERROR with its topic, size and first bytes, counted, and acknowledged. Anything else would leave
        the batch unacknowledged, and every later batch waiting behind it while the process looks alive."""
        attempts = ((msg.payload, reason), (b"", f"{reason} [payload not kept: recording it failed]"))
        for payload, why in attempts:
            try:
                self._reject_poison(msg, payload=payload, reason=why)
            except Exception as exc:
                self._drop_connection()
                if is_outage(exc):
                    log.warning("could not record the failing message as a reject (%s); retrying it", exc)
                    return False
                log.exception("could not record the failing message on %.200s as a reject", msg.topic)
                continue
            return True
        UNRECORDED.inc()
        log.error(
            "a message on %.200s (%d bytes, starting %r) failed and could not be recorded as a reject either: "
            "acknowledging it so that the messages behind it are not held (%s)",
            msg.topic,
            len(msg.payload),
            msg.payload[:64],
            reason,
        )
        return True

    def _handle(self, batch: list[Message]) -> None:
        """Commit, then acknowledge as far as arrival order allows (ingest.lanes.AckOrder)."""
        if not self._commit_batch(batch):
            return
        self.order.committed(batch)

    @property
    def processed(self) -> int:
        """Messages committed and acknowledged (or, from an earlier connection, left for the broker to resend)."""
        return self.order.released

    def _reject_poison(self, msg: Message, *, payload: bytes, reason: str) -> None:
        """A single message that fails for a reason other than the database being down: keep it as a reject."""
        conn = self._connection()
        with conn.transaction():
            ingest_repo.insert_rejects(
                conn,
                rejects=[(msg.received_at, msg.topic, payload, None, reason)],
                excerpt_bytes=self.settings.reject_excerpt_bytes,
            )

    def _drop_connection(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                log.debug("closing a broken connection failed", exc_info=True)
            self._local.conn = None

    def start(self) -> None:
        """Check the database, run the writers in threads, and connect to the broker once they are ready."""
        self._connection()
        extra = device_subscriptions(self.settings, self.devices.all())
        self.consumer.topics = [*self.consumer.topics, *(t for t in extra if t not in self.consumer.topics)]
        self._drop_connection()  # each writer opens its own
        writers = [_Writer(self, i) for i in range(self.writers)]
        self.loops = [Loop(f"ingest-writer-{w.index + 1}", w, stopping=self._stop) for w in writers]
        self.loops.append(Loop("ingest-reject-retention", RejectRetention(self.settings), stopping=self._stop))
        for loop in self.loops:
            loop.start()
        # Subscribing only once every writer holds its connection: a persistent session's backlog arrives at once,
        # and a writer that connected only then would make the first batches wait (a connection and its staging
        # table cost several milliseconds under load).
        for writer in writers:
            writer.ready.wait(timeout=30)
        self.consumer.start()

    def checks(self) -> list[Check]:
        """Health for `gridwatch health`: every writer working, the consumer connected to the broker."""
        consumer = Check(
            "ingest-consumer",
            self.consumer.connected.is_set(),
            "" if self.consumer.connected.is_set() else "not connected to the broker",
        )
        return [*(loop.check() for loop in self.loops), consumer]

    @property
    def alive(self) -> bool:
        """Whether every writer is running and working."""
        return bool(self.loops) and all(loop.check().ok for loop in self.loops)

    @property
    def fatal(self) -> Exception | None:
        """Why this worker gave up, if it did."""
        return self.consumer.fatal

    def stop(self) -> None:
        """Stop consuming; whatever was not committed stays unacknowledged at the broker."""
        self.consumer.stop()
        self._stop.set()
        for loop in self.loops:
            loop.stop()
        for conn in self._conns:
            if not conn.closed:
                conn.close()


class RejectRetention:
    """Deletes rejects past their retention and beyond the row budget (GRIDWATCH_REJECT_RETENTION_DAYS,
    GRIDWATCH_REJECT_MAX_ROWS), a chunk per step so no step holds a long transaction."""

    INTERVAL_S = 600.0
    CHUNK = 10_000

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.settings.dsn, autocommit=False)

    def step(self, conn: psycopg.Connection[Any]) -> float:
        before = datetime.now(UTC) - timedelta(days=self.settings.reject_retention_days)
        with conn.transaction():
            deleted = ingest_service.expire_rejects(
                conn, before=before, keep_rows=self.settings.reject_max_rows, limit=self.CHUNK
            )
        if deleted:
            log.info("deleted %d rejects past their retention or the row budget", deleted)
        return 0.0 if deleted >= self.CHUNK else self.INTERVAL_S

    def close(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()


class _Writer:
    """One writer's job: the batches of its own lane, one after another (ingest.lanes)."""

    def __init__(self, worker: IngestWorker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.ready = threading.Event()

    def open(self) -> None:
        """Each writer holds its own connection (thread-local in the worker, reopened by _commit_batch)."""
        try:
            self.worker._connection()
        except psycopg.Error as exc:  # the batch loop retries with backoff; the messages stay at the broker
            log.warning("ingest writer %d could not connect to the database yet: %s", self.index + 1, exc)
        finally:
            self.ready.set()

    def step(self, _held: None) -> float:
        worker = self.worker
        if worker.consumer.fatal is not None:
            worker._stop.set()  # bad credentials: retrying cannot help; serve exits with the message
            return 0.0
        batch = worker._next_batch(self.index)
        if batch:
            worker._handle(batch)
        return 0.0

    def close(self, _held: None) -> None:
        self.worker._drop_connection()
