"""Issue 23, finding 8: an endpoint that trickles its answer held a delivery thread, and the transaction that locks
its notification rows, for as long as it liked (apprise's timeout is per socket read, not per send). Real notify
worker, real PostgreSQL, a real (hostile) HTTP endpoint."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from core.settings import Settings
from notify.worker import NotifyWorker
from tests.conftest import small_registry
from tests.support import feed, load_registry, wait_for


class TricklingEndpoint:
    """Accepts a webhook POST, then answers 200 one byte a second: every socket read gets data well within any
    read timeout, and the answer is complete only after `length` seconds."""

    def __init__(self, length: int = 120) -> None:
        self.length = length
        self.requested = threading.Event()
        self.requests = 0
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.requests += 1
            self.requested.set()
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % self.length)
                for _ in range(self.length):
                    if self.stop.wait(1.0):
                        return
                    conn.sendall(b".")
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickle() -> Iterator[TricklingEndpoint]:
    endpoint = TricklingEndpoint()
    yield endpoint
    endpoint.close()


def test_trickling_endpoint_cannot_hold_a_delivery_or_its_rows(settings: Settings, trickle: TricklingEndpoint) -> None:
    """The delivery to an endpoint that trickles its answer is given up after the whole-request deadline
    (GRIDWATCH_NOTIFY_DEADLINE_S) and recorded as a failed attempt, and while it is in flight no transaction holds
    the notification's row: another process can lock it at once."""
    s = Settings(_env_file=None, **{**settings.model_dump(), "notify_deadline_s": 3.0})  # type: ignore[arg-type]
    load_registry(s, small_registry(f"json://127.0.0.1:{trickle.port}/"))
    worker = NotifyWorker(s)
    worker.start()
    try:
        wait_for(worker.is_ready, timeout=20, what="notify ready")
        feed(s, "gas-1", datetime.now(UTC), gas_lel=60.0, gas=True)  # the detector's own flag confirms (issue 19)
        assert trickle.requested.wait(20), "the alarm's notification reached the endpoint"
        sent_at = time.monotonic()
        time.sleep(0.5)
        with psycopg.connect(s.dsn) as conn:
            try:
                locked = conn.execute("SELECT id FROM notification WHERE worker_id = 'w1' FOR UPDATE NOWAIT").fetchall()
            except psycopg.errors.LockNotAvailable:
                pytest.fail("the notification's row is locked by a transaction held open across the delivery")
            conn.rollback()
        assert locked, "the notification exists"
        attempt = wait_for(
            lambda: (
                psycopg.connect(s.dsn).execute("SELECT ok, detail FROM delivery_attempt ORDER BY id LIMIT 1").fetchone()
            ),
            timeout=20,
            what="the attempt recorded",
        )
        given_up_after = time.monotonic() - sent_at
    finally:
        worker.stop()
    print(f"NOTIFY trickling endpoint: attempt recorded {given_up_after:.1f} s after the request: {attempt}")
    assert attempt[0] is False and "deadline" in attempt[1]
    assert given_up_after < 3.0 + 5.0, "given up at the whole-request deadline"
