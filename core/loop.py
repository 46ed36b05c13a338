"""The one frame every long-running part runs in: a thread that opens what its job needs, runs the job's steps,
waits between them, backs off and reopens after a failure, logs once per kind of trouble, reports its health and
stops when asked.

A job is a small object (see `Job`): `open()` acquires its connections, `step()` does one pass and returns how
long to wait before the next, `close()` lets go. The loop owns the thread, the stop event, the retry policy and
the heartbeat, so the ingest writers, the rules timer, the actuator, the score ticker and notify's router and
deliverers behave the same way when the database or the broker goes away, and `gridwatch health` can tell a
part that is working from one whose thread is gone or stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import psycopg

log = logging.getLogger(__name__)

R = TypeVar("R")

# A step that has not come back within this long past its planned next start counts as stuck.
DEFAULT_GRACE_S = 60.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
# Failures that are an outage of something outside the process (the database, the broker, the network), not a
# bug: logged as one warning per outage instead of a traceback per retry.
OUTAGES: tuple[type[BaseException], ...] = (psycopg.OperationalError, OSError)


@dataclass(frozen=True, slots=True)
class Check:
    """One part's health: ok, and a sentence for a person when not."""

    name: str
    ok: bool
    detail: str = ""


class Job(Protocol[R]):
    """What a Loop runs: `open` returns what the steps need (connections), `step` does one pass with it and
    returns the seconds to wait before the next (0: at once), `close` lets it go. A step may block (on a socket,
    a LISTEN, an inbox) as long as it comes back within about its wait."""

    def open(self) -> R: ...

    def step(self, held: R) -> float: ...

    def close(self, held: R) -> None: ...


class Loop(Generic[R]):
    """Runs one Job in a daemon thread until stop(); see the module docstring."""

    def __init__(
        self,
        name: str,
        job: Job[R],
        *,
        grace_s: float = DEFAULT_GRACE_S,
        wait: Callable[[float], object] | None = None,
        probe: Callable[[], str | None] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.job = job
        self.grace_s = grace_s
        # Parts with several loops (ingest's writers, notify's threads) share one stop event.
        self.stopping = stopping or threading.Event()
        self.steps = 0
        self.failures = 0
        self.last_error = ""
        # How to wait between steps (default: the stop event); a job that can be woken early passes its own.
        self._wait = wait or self.stopping.wait
        # An extra health question the job can answer (e.g. "not connected to the broker"); None when fine.
        self._probe = probe
        self._due_by = time.monotonic() + grace_s
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run in a daemon thread named after the part."""
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop and wait for its thread (the current step finishes first)."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def run(self) -> None:
        """The loop itself (blocks until stop())."""
        held: list[R] = []  # what open() returned, while open
        delay = BACKOFF_MIN_S
        trouble = ""
        while not self.stopping.is_set():
            try:
                if not held:
                    held.append(self.job.open())
                wait = self.job.step(held[0])
            except Exception as exc:  # the top of a process loop: nothing may end the part
                self._close(held)
                self.failures += 1
                self.last_error = _describe(exc)
                kind = type(exc).__name__
                if isinstance(exc, OUTAGES):
                    if trouble != kind:
                        log.warning("%s: %s (%s); retrying", self.name, _outage(exc), self.last_error)
                else:
                    log.exception("%s failed; retrying in %.1f s", self.name, delay)
                trouble = kind
                self._due_by = time.monotonic() + delay + self.grace_s
                self.stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if trouble:
                log.info("%s: working again after %s", self.name, trouble)
                trouble = ""
            delay = BACKOFF_MIN_S
            self.steps += 1
            self._due_by = time.monotonic() + wait + self.grace_s
            if wait > 0:
                self._wait(wait)
        self._close(held)

    def _close(self, held: list[R]) -> None:
        if not held:
            return
        try:
            self.job.close(held.pop())
        except Exception:  # closing a broken connection must not end the loop
            log.debug("%s: close failed", self.name, exc_info=True)

    def check(self) -> Check:
        """Whether the part is doing its work: thread alive, last step not long overdue, the job's own probe."""
        if self._thread is None or not self._thread.is_alive():
            return Check(self.name, False, "not running")
        if time.monotonic() > self._due_by:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            return Check(self.name, False, f"no step completed for longer than planned{why}")
        if self._probe is not None and (problem := self._probe()):
            return Check(self.name, False, problem)
        return Check(self.name, True)


def _outage(exc: BaseException) -> str:
    return "database unavailable" if isinstance(exc, psycopg.Error) else "network or broker unavailable"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
