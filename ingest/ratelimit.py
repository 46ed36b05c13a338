"""Per-source rate limit on rejects, so one broken or hostile device cannot flood the ingest_reject table.

A token bucket per source plus one bucket for all rejects together. The ingest names each reject's source (a sixth
element of the row): the registry device it comes from, or else the part of the topic one broker account speaks
for (ingest.decode.Decoder.source_of: a device's own base, a whole Zigbee2MQTT base), so that topics invented
under one account share that account's budget instead of each getting one of its own and exhausting the total,
which would hide every other device's rejects (issue 23). Rows without a source are keyed by their device id, else
their topic. Rejects within budget are stored as
always; beyond it they are counted (gridwatch_ingest_rejects_suppressed_total) and acknowledged, and the next
reject of that source that is stored says how many were left out since when. The messages themselves are
garbage by definition (each one failed validation), so summarising them loses nothing a person would act on.

Readings are never limited here: DESIGN judges a device's buffered backlog or a fast-forwarded scenario in
event time exactly as if it had arrived live, so dropping or thinning readings by arrival rate would change
alarms. A device far above its contract is counted (gridwatch_ingest_readings_over_rate_total) and logged once
per minute, for the operator to look at. Alarms are bounded by design: one open alarm per (device, type),
notifications on transitions only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from core.domain import Reading

log = logging.getLogger(__name__)

SUPPRESSED = Counter(
    "gridwatch_ingest_rejects_suppressed_total",
    "Rejects not stored individually because their source exceeded its rate limit",
)
OVER_RATE = Counter(
    "gridwatch_ingest_readings_over_rate_total",
    "Readings (stored and evaluated) from devices sending above the per-device rate limit",
)

MAX_BUCKETS = 50_000  # idle buckets are pruned beyond this many sources (random topics must not grow memory)


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float
    suppressed: int = 0
    since: datetime | None = None


@dataclass
class RateLimit:
    """Token buckets: `rate_per_s` sustained, `burst` at once, per source; `total_*` for all sources together."""

    rate_per_s: float = 1.0
    burst: float = 60.0
    total_rate_per_s: float = 200.0
    total_burst: float = 2_000.0
    reading_rate_per_s: float = 20.0
    reading_burst: float = 2_000.0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, Bucket] = field(default_factory=dict)
    _readings: dict[str, Bucket] = field(default_factory=dict)
    _total: Bucket | None = None
    _last_warning: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the ingest's writer threads share one limit

    def _take(self, buckets: dict[str, Bucket], key: str, rate: float, burst: float, now: float) -> Bucket | None:
        """The source's bucket with one token taken, or None (bucket left in `buckets`) when it is empty."""
        b = buckets.get(key)
        if b is None:
            if len(buckets) >= MAX_BUCKETS:
                self._prune(buckets, rate, burst, now)
            b = buckets[key] = Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.at) * rate)
        b.at = now
        if b.tokens < 1:
            return None
        b.tokens -= 1
        return b

    @staticmethod
    def _prune(buckets: dict[str, Bucket], rate: float, burst: float, now: float) -> None:
        for key in [k for k, b in buckets.items() if b.tokens + (now - b.at) * rate >= burst and not b.suppressed]:
            del buckets[key]
        if len(buckets) >= MAX_BUCKETS:  # everyone is busy: forget the oldest half rather than grow
            for key in sorted(buckets, key=lambda k: buckets[k].at)[: len(buckets) // 2]:
                del buckets[key]

    def filter_rejects(self, rejects: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rejects to store: (received_at, topic, payload, device_id, reason[, source]) rows within budget, the
        reason of the first one after a suppressed run saying how many were left out."""
        if not rejects:
            return []
        with self._lock:
            return self._filter_rejects(rejects)

    def _filter_rejects(self, rejects: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        now = self.clock()
        kept: list[tuple[Any, ...]] = []
        for row in rejects:
            key = row[5] if len(row) > 5 else (f"device:{row[3]}" if row[3] else f"topic:{row[1]}")
            if self._total is None:
                self._total = Bucket(self.total_burst, now)
            total = self._total
            total.tokens = min(self.total_burst, total.tokens + (now - total.at) * self.total_rate_per_s)
            total.at = now
            bucket = self._take(self._buckets, key, self.rate_per_s, self.burst, now) if total.tokens >= 1 else None
            if bucket is None:
                b = self._buckets.get(key) or self._buckets.setdefault(key, Bucket(0.0, now))
                if b.suppressed == 0:
                    b.since = datetime.now(UTC)
                    log.warning(
                        "rate limit: rejects from %s are no longer stored one by one (over %.1f/s)",
                        key,
                        self.rate_per_s,
                    )
                b.suppressed += 1
                SUPPRESSED.inc()
                continue
            total.tokens -= 1
            if bucket.suppressed:
                since = bucket.since.isoformat(timespec="seconds") if bucket.since else "?"
                row = (
                    *row[:4],
                    f"{row[4]} [rate limit: {bucket.suppressed} more rejects from this source were "
                    f"not stored since {since}]",
                    *row[5:],
                )
                bucket.suppressed, bucket.since = 0, None
            kept.append(row)
        return kept

    def count_readings(self, readings: Sequence[Reading]) -> int:
        """Count (never drop) readings above the per-device rate; returns how many were over."""
        with self._lock:
            return self._count_readings(readings)

    def _count_readings(self, readings: Sequence[Reading]) -> int:
        now = self.clock()
        over = 0
        buckets, rate, burst = self._readings, self.reading_rate_per_s, self.reading_burst
        for r in readings:
            # _take, inlined for the bucket that exists (every reading passes here)
            b = buckets.get(r.device_id)
            if b is not None:
                tokens = b.tokens + (now - b.at) * rate
                if tokens > burst:
                    tokens = burst
                b.at = now
                if tokens >= 1:
                    b.tokens = tokens - 1
                    continue
                b.tokens = tokens
            elif self._take(buckets, r.device_id, rate, burst, now) is not None:
                continue
            over += 1
            if now - self._last_warning.get(r.device_id, -1e9) > 60:
                self._last_warning[r.device_id] = now
                log.warning(
                    "device %s sends readings above %.0f/s (burst %.0f): check it",
                    r.device_id,
                    self.reading_rate_per_s,
                    self.reading_burst,
                )
        if over:
            OVER_RATE.inc(over)
        return over
