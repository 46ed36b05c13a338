"""One transaction per batch: decode, store readings (COPY), apply rules, record rejects; then ack."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from psycopg import Connection

from core import repo as core_repo
from core.domain import Adapter, Device, DeviceStatus, Reading
from ingest import repo
from ingest.decode import NOT_DATA_PAYLOAD_BYTES, CommandAck, Decoder, DeviceEvent, Message, Reject
from ingest.ratelimit import RateLimit
from rules import service as rules_service
from rules.ruleset import RuleSet

log = logging.getLogger(__name__)

MESSAGES = Counter("gridwatch_ingest_messages_total", "MQTT messages processed, by outcome", ["outcome"])
# Issue 19: every message ends in a reading (new or an absorbed duplicate), a status, a device event, a command ack or
# a reject (invalid, or not device data), counted per adapter (native, zigbee2mqtt, shelly, tasmota, esphome, unknown).
OUTCOMES = Counter(
    "gridwatch_ingest_outcomes_total",
    "MQTT messages by the adapter that decoded them and what they became",
    ["adapter", "outcome"],
)
REJECTS = Counter("gridwatch_ingest_rejects_total", "Messages rejected, by reason class", ["reason"])
ALARM_TRANSITIONS = Counter("gridwatch_alarm_transitions_total", "Alarm transitions written", ["kind", "type"])
BATCH_SECONDS = Histogram(
    "gridwatch_ingest_batch_seconds",
    "Time to process and commit one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "gridwatch_ingest_batch_size",
    "Messages per committed batch",
    buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)


def reject_class(reason: str) -> str:
    """A low-cardinality label for a reject reason."""
    for prefix, label in (
        ("not device data", "not_device_data"),
        ("malformed JSON", "malformed_json"),
        ("unknown device", "unknown_device"),
        ("payload of", "too_large"),
        ("payload must be", "not_object"),
        ("no decoder", "unknown_topic"),
        ("ts ", "bad_time"),
        ("internal error", "internal"),
    ):
        if reason.startswith(prefix):
            return label
    return "invalid_field"


@dataclass
class DeviceCache:
    """Registry devices for the hot path; a miss asks the database (so newly loaded devices work)."""

    conn_factory: Any
    ttl_s: float = 30.0
    _by_id: dict[str, Device] = field(default_factory=dict)
    _by_foreign: dict[tuple[Adapter, str], Device] = field(default_factory=dict)
    _missing: dict[str, float] = field(default_factory=dict)
    # The connection a miss is looked up on: the calling writer thread's own (several writers share the cache).
    _local: threading.local = field(default_factory=threading.local)

    def prime(self, conn: Connection[Any]) -> None:
        for d in core_repo.get_all_devices(conn):
            self._put(d)

    def _put(self, d: Device) -> None:
        self._by_id[d.id] = d
        if d.foreign_id:
            self._by_foreign[(d.adapter, d.foreign_id)] = d

    def all(self) -> list[Device]:
        """The devices known so far (after prime: the whole registry)."""
        return list(self._by_id.values())

    def bind(self, conn: Connection[Any]) -> None:
        self._local.conn = conn

    @property
    def _conn(self) -> Connection[Any] | None:
        conn: Connection[Any] | None = getattr(self._local, "conn", None)
        return conn

    MAX_MISSES = 10_000  # ids not in the registry remembered at once (invented ids must not grow memory)

    def _remember_miss(self, key: str) -> None:
        if len(self._missing) >= self.MAX_MISSES:
            self._missing.clear()
        self._missing[key] = time.monotonic()

    def _lookup_miss(self, key: str) -> bool:
        seen = self._missing.get(key)
        return seen is not None and time.monotonic() - seen < self.ttl_s

    def device(self, device_id: str) -> Device | None:
        found = self._by_id.get(device_id)
        if found is not None or self._conn is None or self._lookup_miss(device_id):
            return found
        got = core_repo.get_devices(self._conn, ids=[device_id]).get(device_id)
        if got is None:
            self._remember_miss(device_id)
        else:
            self._put(got)
        return got

    def by_foreign_id(self, adapter: Adapter, foreign_id: str) -> Device | None:
        found = self._by_foreign.get((adapter, foreign_id))
        key = f"{adapter}:{foreign_id}"
        if found is not None or self._conn is None or self._lookup_miss(key):
            return found
        got = core_repo.get_devices_by_foreign_id(self._conn, adapter=adapter, foreign_ids=[foreign_id])
        device = got.get(foreign_id)
        if device is None:
            self._remember_miss(key)
        else:
            self._put(device)
        return device


@dataclass(slots=True)
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: int = 0
    events: int = 0
    alarm_changes: list[rules_service.AlarmChange] = field(default_factory=list)
    new: list[Reading] = field(default_factory=list)


@dataclass(slots=True)
class Decoded:
    """A batch's messages, decoded, and the adapter that took each (for the outcome counter)."""

    readings: list[Reading] = field(default_factory=list)
    statuses: list[DeviceStatus] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    acks: list[CommandAck] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)
    reading_messages: list[tuple[str, int, int]] = field(default_factory=list)  # (adapter, first reading, readings)
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)  # (adapter, outcome) -> messages

    def count(self, adapter: str, outcome: str) -> None:
        key = (adapter, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


def _outcome(items: Sequence[Any]) -> str:
    """What a message became (an adapter gives one kind of outcome per message)."""
    item = items[0] if items else None
    if isinstance(item, Reading):
        return "reading"
    if isinstance(item, DeviceStatus):
        return "status"
    if isinstance(item, DeviceEvent):
        return "event"
    if isinstance(item, CommandAck):
        return "ack"
    return "not_data" if isinstance(item, Reject) and item.kind == "not_data" else "rejected"


def reject_row(msg: Message, reject: Reject, *, decoder: Decoder, devices: DeviceCache) -> tuple[Any, ...]:
    """(received_at, topic, payload, device_id, reason, source): the source the reject's rate limit is kept per
    is a registry device it names, else the topic's account namespace (a device id in the topic that is not in
    the registry is anyone's invention, so it is no source of its own)."""
    known = reject.device_id is not None and devices.device(reject.device_id) is not None
    source = f"device:{reject.device_id}" if known else f"source:{decoder.source_of(msg.topic)}"
    # A bridge's bookkeeping (not device data) is kept short and says so (issue 19: every message leaves a trace).
    payload = msg.payload[:NOT_DATA_PAYLOAD_BYTES] if reject.kind == "not_data" else msg.payload
    reason = f"not device data: {reject.reason}" if reject.kind == "not_data" else reject.reason
    return (msg.received_at, msg.topic, payload, reject.device_id, reason, source)


def decode_batch(messages: Sequence[Message], *, decoder: Decoder, devices: DeviceCache) -> Decoded:
    """Every message of a batch as readings, statuses, device events, command acks or rejects (with their reason):
    each message ends in one of them (issue 19), none is dropped."""
    out = Decoded()
    for msg in messages:
        adapter, items = decoder.decode_tagged(msg, devices)
        if not items:  # a decoder bug must not lose a message silently
            items = [Reject(f"internal error: no decoder result for topic {msg.topic!r}")]
        outcome = _outcome(items)
        if outcome == "reading":  # counted once the COPY says whether they were new (_count_outcomes)
            out.reading_messages.append((adapter, len(out.readings), len(items)))
        else:
            out.count(adapter, outcome)
        for item in items:
            if isinstance(item, Reading):
                out.readings.append(item)
            elif isinstance(item, Reject):
                out.rejects.append(reject_row(msg, item, decoder=decoder, devices=devices))
            elif isinstance(item, DeviceStatus):
                out.statuses.append(item)
            elif isinstance(item, DeviceEvent):
                out.events.append(
                    (item.at, item.adapter, item.foreign_id, item.device_id, item.kind, msg.topic, item.details)
                )
            else:
                out.acks.append(item)
    return out


def _write_batch(
    conn: Connection[Any],
    decoded: Decoded,
    *,
    devices: DeviceCache,
    ruleset: RuleSet,
    excerpt_bytes: int,
) -> BatchResult:
    result = BatchResult()
    readings, statuses = decoded.readings, decoded.statuses
    repo.insert_rejects(conn, rejects=decoded.rejects, excerpt_bytes=excerpt_bytes)
    repo.insert_device_events(conn, events=decoded.events)
    result.events = len(decoded.events)
    # Every device state of the batch in one sorted lock: two processes cannot deadlock on them. The readings are
    # written after it: a reading two batches both hold (a redelivery) belongs to a device both lock, so the later
    # batch meets it only after this one's commit.
    ids = [*{r.device_id for r in readings}, *(s.device_id for s in statuses)]
    states = rules_service.lock_devices(conn, device_ids=ids) if ids else {}
    new = repo.insert_readings(conn, readings=readings)
    result.new = new
    result.rejected = len(decoded.rejects)
    result.stored = len(new)
    result.duplicates = len(readings) - len(new)
    touched = {r.device_id for r in new}
    known = {d: dev for d in touched if (dev := devices.device(d)) is not None}
    result.alarm_changes = rules_service.apply_readings(
        conn, readings=new, devices=known, ruleset=ruleset, states=states
    )
    status_devices = {s.device_id: dev for s in statuses if (dev := devices.device(s.device_id)) is not None}
    result.alarm_changes += rules_service.apply_statuses(
        conn, statuses=statuses, devices=status_devices, ruleset=ruleset, states=states
    )
    result.statuses = len(statuses)
    if decoded.acks:
        result.alarm_changes += rules_service.apply_command_acks(
            conn,
            acks=decoded.acks,
            devices={a.device_id: d for a in decoded.acks if (d := devices.device(a.device_id))},
        )
    return result


def _count_outcomes(decoded: Decoded, *, new: Sequence[Reading]) -> None:
    """gridwatch_ingest_outcomes_total: one count per message; a reading message whose readings were all absorbed
    (a redelivery, a bridge repeating itself) is a duplicate."""
    fresh = {id(r) for r in new}
    for adapter, start, count in decoded.reading_messages:
        kept = any(id(r) in fresh for r in decoded.readings[start : start + count])
        decoded.count(adapter, "reading" if kept else "duplicate")
    for (adapter, outcome), n in decoded.outcomes.items():
        OUTCOMES.labels(adapter, outcome).inc(n)


def process_batch(
    conn: Connection[Any],
    *,
    messages: Sequence[Message],
    decoder: Decoder,
    devices: DeviceCache,
    ruleset: RuleSet,
    limiter: RateLimit | None = None,
    reject_excerpt_bytes: int = repo.DEFAULT_REJECT_EXCERPT,
) -> BatchResult:
    """Decode and persist a batch in one transaction (the caller acks the messages after it returns)."""
    started = time.perf_counter()
    with conn.transaction():
        devices.bind(conn)
        decoded = decode_batch(messages, decoder=decoder, devices=devices)
        if limiter is not None:  # one broken device must not flood the reject table (ratelimit.py)
            limiter.count_readings(decoded.readings)
            decoded.rejects = limiter.filter_rejects(decoded.rejects)
        result = _write_batch(conn, decoded, devices=devices, ruleset=ruleset, excerpt_bytes=reject_excerpt_bytes)
    rejects, acks = decoded.rejects, decoded.acks
    for ack in acks:
        log.info("command %s on %s acknowledged ok=%s %s", ack.command_id, ack.device_id, ack.ok, ack.detail)
    MESSAGES.labels("stored").inc(result.stored)
    MESSAGES.labels("duplicate").inc(result.duplicates)
    MESSAGES.labels("rejected").inc(result.rejected)
    MESSAGES.labels("status").inc(result.statuses)
    MESSAGES.labels("event").inc(result.events)
    _count_outcomes(decoded, new=result.new)
    for reject in rejects:
        REJECTS.labels(reject_class(reject[4])).inc()
        log.info("rejected %s: %s", reject[1], reject[4])
    for change in result.alarm_changes:
        ALARM_TRANSITIONS.labels(change.kind, change.alarm_type).inc()
    BATCH_SECONDS.observe(time.perf_counter() - started)
    BATCH_SIZE.observe(len(messages))
    return result


def expire_rejects(conn: Connection[Any], *, before: datetime, keep_rows: int, limit: int) -> int:
    """Delete rejects received before `before` and the oldest beyond the newest `keep_rows` (up to `limit` of
    each); returns how many went. The caller owns the transaction."""
    return repo.delete_expired_rejects(conn, before=before, keep_rows=keep_rows, limit=limit)
