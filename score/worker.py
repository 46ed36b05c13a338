"""The score part: consumes resolutions as they happen (LISTEN on RESOLVED_CHANNEL, which rules NOTIFYs when a
person resolves an alarm) and runs the periodic tick (restorations, overdue rectifications, upkeep, snapshots),
in the core.loop frame. It meets rules only in the database, as notify does through the outbox."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from core.db import RESOLVED_CHANNEL
from core.loop import Check, Loop
from score import service
from score.policy import active_policies
from score.schemas import TickResult

log = logging.getLogger(__name__)

# Resolutions are looked for at least this often even without a NOTIFY (one lost while reconnecting).
POLL_S = 30.0

Held = tuple[psycopg.Connection[Any], psycopg.Connection[Any]]


class ScoreWorker:
    """Runs until stop(); several may run against one database (the work is under one advisory lock)."""

    def __init__(self, dsn: str, *, interval_s: float = 300.0, poll_s: float = POLL_S) -> None:
        active_policies()  # a broken policy file stops `serve` at start, with the file's errors
        self.dsn = dsn
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.loop: Loop[Held] = Loop("score", self)
        self.ticks = 0
        self.scored = 0
        # The first tick waits one interval: a restart must not tick twice in a row.
        self._next_tick = time.monotonic() + interval_s

    def tick(self) -> TickResult:
        """One tick in its own transaction, at the wall clock."""
        with psycopg.connect(self.dsn, autocommit=False) as conn, conn.transaction():
            return service.run_score_tick(conn, now=datetime.now(UTC))

    def open(self) -> Held:
        listen = psycopg.connect(self.dsn, autocommit=True)
        try:
            listen.execute(f"LISTEN {RESOLVED_CHANNEL}")
            return listen, psycopg.connect(self.dsn, autocommit=False)
        except BaseException:
            listen.close()
            raise

    def step(self, held: Held) -> float:
        listen, conn = held
        with conn.transaction():
            entries = service.score_resolutions(conn, now=datetime.now(UTC))
        if entries:
            self.scored += len(entries)
            log.info("score: %d ledger entr%s for verified hazards", len(entries), "y" if len(entries) == 1 else "ies")
        if time.monotonic() >= self._next_tick:
            with conn.transaction():
                result = service.run_score_tick(conn, now=datetime.now(UTC))
            self.ticks += 1
            self._next_tick = time.monotonic() + self.interval_s
            if result.written:
                log.info("score tick wrote %s", result.written)
        wait = max(0.0, min(self.poll_s, self._next_tick - time.monotonic()))
        for _ in listen.notifies(timeout=wait, stop_after=1):
            pass
        return 0.0

    def close(self, held: Held) -> None:
        for conn in held:
            conn.close()

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def checks(self) -> list[Check]:
        """Health for `gridwatch health`."""
        return [self.loop.check()]
