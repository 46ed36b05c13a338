"""Issue 9 (and issue 2 must-show 3): faults under load on the real broker and database.

Every test here injects one fault while messages or notifications are in flight, lets the system
recover on its own, and then counts: published, stored, duplicates, lost (must be 0). The counts are
printed (run with -s to see them) and logged, and asserted.

Processes that get killed run as real subprocesses (`python -m app serve --only ingest` / `notify`) with
GRIDWATCH_* settings; brokers and databases that get restarted are private to this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
import psycopg
import pytest

from core import db
from core import repo as core_repo
from core.embedded import EmbeddedMosquitto, EmbeddedPostgres
from core.registry import parse_registry
from tests.conftest import ROOT, Services
from tests.support import meeting_orphans, wait_for

log = logging.getLogger(__name__)

pytestmark = pytest.mark.slow

SECRET = "fault-test-secret-key-0123456789"


# --------------------------------------------------------------------------------------------------------------
# Helpers: a registry, a paced publisher that never gives up on a message, subprocess parts, a receiver that
# can go down, counting.
# --------------------------------------------------------------------------------------------------------------


def fault_registry(receiver_base: str, *, gas_devices: int = 3) -> str:
    """One micro-grid, one worker, gas detectors gas-01.. plus a smoke detector."""
    devices = "\n".join(
        f"  - {{id: gas-{i:02d}, kind: gas_detector, site: s1, location: kitchen}}" for i in range(1, gas_devices + 1)
    )
    return (
        textwrap.dedent(f"""\
        community: {{id: c1, name: Fault community}}
        grids:
          - id: g1
            name: Grid one
            micro_grids:
              - {{id: mg1, name: Micro one}}
        workers:
          - {{id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], notify: ["{receiver_base}/w1"],
              locale: en}}
        sites:
          - {{id: s1, kind: shop, micro_grid: mg1, name: Noodle shop, address: 1 Lane, floor: 1}}
        devices:
        """)
        + devices
        + "\n  - {id: smoke-1, kind: smoke_detector, site: s1, location: corridor, battery: true}\n"
    )


def load_registry(dsn: str, text: str) -> None:
    with psycopg.connect(dsn) as conn:
        db.migrate(conn)
        with conn.transaction():
            core_repo.upsert_registry(conn, registry=parse_registry(text))


def scalar(dsn: str, sql: str, *args: object) -> int:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return int(row[0] or 0)


def try_scalar(dsn: str, sql: str) -> int | None:
    """Like scalar, but None while the database is down."""
    try:
        return scalar(dsn, sql)
    except psycopg.OperationalError:
        return None


@dataclass
class Load:
    """Readings to publish: (device, seq) -> payload; gas-01 is in alarm (30 %LEL), the rest are quiet."""

    prefix: str
    total: int
    devices: tuple[str, ...] = ("gas-01", "gas-02", "smoke-1")
    payloads: list[tuple[str, int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = datetime.now(UTC) - timedelta(minutes=30)
        for i in range(self.total):
            device = self.devices[i % len(self.devices)]
            seq = i // len(self.devices)
            ts = base + timedelta(milliseconds=10 * i)
            body: dict[str, Any] = {"ts": ts.isoformat(), "seq": seq}
            if device == "gas-01":
                body |= {"gas": True, "gas_lel": 30.0}  # the detector's own alarm flag: GAS-02 at once
            elif device.startswith("gas"):
                body["gas_lel"] = 2.0
            else:
                body |= {"smoke": False, "battery_pct": 90.0}
            self.payloads.append((device, seq, json.dumps(body).encode()))

    def per_device(self, device: str) -> int:
        return sum(1 for d, _, _ in self.payloads if d == device)


class PacedPublisher:
    """Publishes a Load at a steady rate from a thread, like a fleet of devices would.

    It keeps at most `window` messages in flight (paho loses messages past 65,535, STYLE.md), rides out a
    broker restart (paho resends unacknowledged QoS-1 messages on reconnect) and, at the end, publishes
    again whatever the broker never acknowledged, as a device with a persistent outbox does.
    """

    def __init__(self, port: int, load: Load, *, rate: float, window: int = 200) -> None:
        self.load = load
        self.rate = rate
        # Released by every PUBACK (paho's callback runs under paho's own lock: take no lock of ours there).
        self.window = threading.Semaphore(window)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(window)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=1)
        self.client.on_publish = self._on_publish
        self.acked_mids: set[int] = set()
        self.infos: dict[int, mqtt.MQTTMessageInfo] = {}
        self.sent = 0
        self.republished = 0
        self.done = threading.Event()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self.acked_mids.add(mid)  # (a PUBACK can arrive before publish() returns: record mids, not infos)
        self.window.release()

    def _publish(self, index: int) -> None:
        device, _seq, payload = self.load.payloads[index]
        self.window.acquire(timeout=5)
        self.infos[index] = self.client.publish(f"{self.load.prefix}/{device}/telemetry", payload, qos=1)

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.load.total):
            pause = started + i / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._publish(i)
            self.sent += 1
        self.done.set()

    def start(self) -> PacedPublisher:
        self.thread.start()
        return self

    def unacknowledged(self) -> list[int]:
        # (is_published() raises for a message published while disconnected, even once paho has resent it)
        return [i for i in range(self.load.total) if i not in self.infos or self.infos[i].mid not in self.acked_mids]

    def finish(self, timeout: float = 30) -> None:
        """Wait for every PUBACK; republish what is still unacknowledged after a while."""
        assert self.done.wait(timeout), "publisher did not finish publishing"
        deadline = time.monotonic() + timeout
        republish_at = time.monotonic() + 5
        while missing := self.unacknowledged():
            assert time.monotonic() < deadline, f"broker left {len(missing)}/{self.load.total} unacknowledged"
            if time.monotonic() > republish_at:
                for i in missing:
                    self._publish(i)
                self.republished += len(missing)
                republish_at = time.monotonic() + 5
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Part:
    """`gridwatch serve --only ingest` (or notify) as a real process with GRIDWATCH_* settings."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Part:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
        env |= self.env | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as out:
            out.write(f"---- start {self.module} at {datetime.now(UTC).isoformat()}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--only", self.module],
                env=env,
                cwd=self.log_path.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, pattern: str, *, timeout: float = 20, after: int = 0) -> None:
        wait_for(
            lambda: re.search(pattern, self.log()[after:]) is not None,
            timeout=timeout,
            what=f"{self.module} to log {pattern!r}",
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye to the broker or the database."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def part_env(dsn: str, mqtt_url: str, prefix: str, client_id: str, **extra: str) -> dict[str, str]:
    return {
        "GRIDWATCH_DATABASE_URL": dsn,
        "GRIDWATCH_MQTT_URL": mqtt_url,
        "GRIDWATCH_TOPIC_PREFIX": prefix,
        "GRIDWATCH_MQTT_CLIENT_ID": client_id,
        "GRIDWATCH_SECRET_KEY": SECRET,
        "GRIDWATCH_LOG_LEVEL": "INFO",
        "GRIDWATCH_BATCH_LINGER_MS": "5",
        "GRIDWATCH_NOTIFY_POLL_S": "0.2",
        **extra,
    }


class Webhook:
    """A real HTTP receiver for apprise json:// that can go down (port closed) and come back on the same port,
    and can answer slowly so a test can kill the sender while a delivery is in flight."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.delay_s = 0.0
        self.in_handler = threading.Event()
        self._lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.up()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    outer.received.append((self.path, json.loads(body)))
                outer.in_handler.set()
                time.sleep(outer.delay_s)  # the receiver has it; the sender does not know yet
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler

    def up(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def base(self) -> str:
        return f"json://127.0.0.1:{self.port}"

    def alarm_ids(self) -> list[int]:
        """The alarm id each received message is about (every body ends with '#<alarm id>')."""
        with self._lock:
            return [int(re.findall(r"#(\d+)\s*$", d["message"])[-1]) for _, d in self.received]


def report(name: str, **counts: int) -> None:
    line = f"FAULT {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
    print(line)
    log.warning("%s", line)


def reading_counts(dsn: str, load: Load) -> dict[str, int]:
    """published / stored / duplicates / lost for a Load, from the reading table."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT device_id, seq, count(*) FROM reading GROUP BY device_id, seq").fetchall()
    stored = {(d, s): n for d, s, n in rows}
    expected = {(d, s) for d, s, _ in load.payloads}
    return {
        "published": load.total,
        "stored": sum(stored.values()),
        # the natural key is (device, ts, seq): a second row for one (device, seq) would be a duplicate
        "duplicates": sum(n - 1 for n in stored.values()),
        "lost": len(expected - set(stored)),
        "unexpected": len(set(stored) - expected),
    }


def assert_alarms_once(dsn: str, load: Load) -> dict[str, int]:
    """gas-01 raised gas_leak exactly once (one open alarm per device and type, one 'raised' event)."""
    with psycopg.connect(dsn) as conn:
        alarms = conn.execute("SELECT id, device_id, type, count FROM alarm ORDER BY id").fetchall()
        raised = conn.execute(
            "SELECT a.device_id, a.type, count(*) FROM alarm_event e JOIN alarm a "
            "ON a.id = e.alarm_id WHERE e.kind = 'raised' GROUP BY 1, 2"
        ).fetchall()
    per_type = Counter((d, t) for _, d, t, _ in alarms)
    assert all(n == 1 for n in per_type.values()), f"duplicate alarm: {per_type}"
    assert all(n == 1 for _, _, n in raised), f"raised more than once: {raised}"
    leak = [c for _, d, t, c in alarms if d == "gas-01" and t == "gas_leak"]
    assert len(leak) == 1, f"gas-01 must have exactly one gas_leak alarm: {alarms}"
    assert 1 <= leak[0] <= load.per_device("gas-01"), f"gas_leak count {leak[0]} is more than its readings"
    assert not [a for a in alarms if a[1] != "gas-01"], f"quiet devices raised alarms: {alarms}"
    assert meeting_orphans(dsn) == 0, "every event and outbox row names its alarm (and event)"
    return {"alarms": len(alarms), "raised_events": sum(n for _, _, n in raised)}


# --------------------------------------------------------------------------------------------------------------
# Private PostgreSQL + Mosquitto for the tests that restart them.
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Private:
    pg: EmbeddedPostgres
    mosquitto: EmbeddedMosquitto

    def new_database(self) -> str:
        name = f"gw_fault_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return urlunsplit(urlsplit(self.pg.url)._replace(path="/" + name))


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    base = tmp_path_factory.mktemp("private")
    pg = EmbeddedPostgres(base / "pg")
    mosq = EmbeddedMosquitto(base / "mosquitto")
    pg.start()
    mosq.start()
    yield Private(pg, mosq)
    mosq.stop()
    pg.stop("immediate")


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[list[Part]]:
    started: list[Part] = []
    yield started
    for p in started:
        p.stop()
    for p in started:
        print(f"---- {p.module} log (tail)\n" + p.log()[-3000:])


# --------------------------------------------------------------------------------------------------------------
# Ingest faults
# --------------------------------------------------------------------------------------------------------------


def test_sigkill_ingest_under_load_stores_every_reading_once(
    services: Services, database_url: str, tag: str, tmp_path: Path, parts: list[Part]
) -> None:
    """Issue 2 must-show 3: SIGKILL while messages are in flight, restart, every reading exactly once."""
    prefix = f"t{tag}/gw/v1"
    load_registry(database_url, fault_registry("json://127.0.0.1:9"))
    env = part_env(database_url, services.mqtt_url, prefix, f"ingest-{tag}")
    ingest = Part("ingest", env, tmp_path / "ingest.log").start()
    parts.append(ingest)
    ingest.wait_log("connected to mqtt")

    load = Load(prefix, total=3000)
    pub = PacedPublisher(services.mqtt_port, load, rate=1500).start()
    try:
        wait_for(
            lambda: scalar(database_url, "SELECT count(*) FROM reading") >= 600,
            timeout=30,
            interval=0.01,
            what="ingest to store some readings",
        )
        ingest.kill()
        stored_at_kill = scalar(database_url, "SELECT count(*) FROM reading")
        in_flight = not pub.done.is_set()
        time.sleep(0.5)  # the broker keeps queueing for the dead session
        mark = len(ingest.log())
        ingest.start()
        ingest.wait_log(r"session resumed", after=mark)
        pub.finish()
        wait_for(
            lambda: scalar(database_url, "SELECT count(*) FROM reading") >= load.total,
            timeout=60,
            what="every reading stored after restart",
        )
        time.sleep(0.5)  # anything redelivered late would show up as a duplicate now
    finally:
        pub.close()
    counts = reading_counts(database_url, load)
    alarms = assert_alarms_once(database_url, load)
    report("sigkill_ingest", **counts, stored_at_kill=stored_at_kill, republished=pub.republished, **alarms)
    assert in_flight and stored_at_kill < load.total, "the kill must land while messages are in flight"
    assert counts == {"published": load.total, "stored": load.total, "duplicates": 0, "lost": 0, "unexpected": 0}
    assert scalar(database_url, "SELECT count(*) FROM ingest_reject") == 0


def _publish_all(port: int, load: Load) -> None:
    pub = PacedPublisher(port, load, rate=5000).start()
    try:
        pub.finish()
    finally:
        pub.close()


@pytest.mark.parametrize("fault", ["read_only", "revoked_insert"])
def test_database_refusing_writes_holds_readings_unacknowledged(
    services: Services, database_url: str, tag: str, tmp_path: Path, parts: list[Part], fault: str
) -> None:
    """A read-only database (disk full, failover to a replica) or a revoked INSERT privilege is not the
    messages' fault: clear error, nothing acknowledged, nothing turned into rejects, all stored afterwards."""
    prefix = f"t{tag}/gw/v1"
    load_registry(database_url, fault_registry("json://127.0.0.1:9"))
    dbname = urlsplit(database_url).path.lstrip("/")
    dsn = database_url
    role = f"gw_ingest_{tag}"
    with psycopg.connect(services.postgres_url, autocommit=True) as admin:
        if fault == "revoked_insert":
            admin.execute(f"CREATE ROLE {role} LOGIN")
            with psycopg.connect(database_url, autocommit=True) as conn:
                # serve runs migrations at start: CREATE TABLE IF NOT EXISTS needs CREATE on the schema
                conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
                conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
                conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
            dsn = urlunsplit(
                urlsplit(database_url)._replace(
                    netloc=f"{role}@{urlsplit(database_url).hostname}:{urlsplit(database_url).port}"
                )
            )
    ingest = Part("ingest", part_env(dsn, services.mqtt_url, prefix, f"ingest-{tag}"), tmp_path / "ingest.log")
    parts.append(ingest.start())
    ingest.wait_log("connected to mqtt")

    with psycopg.connect(services.postgres_url, autocommit=True) as admin:
        if fault == "read_only":
            admin.execute(f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
            # the setting applies to new sessions: cut the ingest's, it reconnects into a read-only one
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        else:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f"REVOKE INSERT ON reading FROM {role}")
    load = Load(prefix, total=300)
    _publish_all(services.mqtt_port, load)
    expected = "read-only transaction" if fault == "read_only" else "permission denied"
    ingest.wait_log(rf"ERROR .*{expected}")
    time.sleep(1.0)
    held = scalar(database_url, "SELECT count(*) FROM reading")
    rejects_during = scalar(database_url, "SELECT count(*) FROM ingest_reject")
    assert ingest.proc is not None and ingest.proc.poll() is None, "ingest must keep running"

    with psycopg.connect(services.postgres_url, autocommit=True) as admin:
        if fault == "read_only":
            admin.execute(f"ALTER DATABASE {dbname} RESET default_transaction_read_only")
        else:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f"GRANT INSERT ON reading TO {role}")
    wait_for(
        lambda: scalar(database_url, "SELECT count(*) FROM reading") >= load.total,
        timeout=60,
        what="readings stored once the database takes writes again",
    )
    time.sleep(0.3)
    counts = reading_counts(database_url, load)
    report(f"database_{fault}", **counts, stored_while_refused=held, rejects=rejects_during)
    assert held == 0 and rejects_during == 0, "nothing may be stored or rejected while writes are refused"
    assert counts == {"published": load.total, "stored": load.total, "duplicates": 0, "lost": 0, "unexpected": 0}
    assert scalar(database_url, "SELECT count(*) FROM ingest_reject") == 0
    assert_alarms_once(database_url, load)
    if fault == "revoked_insert":
        with psycopg.connect(services.postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            admin.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("fault", ["postgres_restart", "mosquitto_restart"])
def test_restart_under_load_loses_nothing(
    private: Private, tag: str, tmp_path: Path, parts: list[Part], fault: str
) -> None:
    """PostgreSQL restarted: ingest holds its batch unacknowledged, reconnects, catches up.
    Mosquitto restarted (persistence on): publisher and ingest reconnect, the session's queue survives."""
    dsn = private.new_database()
    prefix = f"t{tag}/gw/v1"
    load_registry(dsn, fault_registry("json://127.0.0.1:9"))
    ingest = Part("ingest", part_env(dsn, private.mosquitto.url, prefix, f"ingest-{tag}"), tmp_path / "ingest.log")
    parts.append(ingest.start())
    ingest.wait_log("connected to mqtt")

    load = Load(prefix, total=2000)
    pub = PacedPublisher(private.mosquitto.port, load, rate=800).start()
    try:
        wait_for(
            lambda: (try_scalar(dsn, "SELECT count(*) FROM reading") or 0) >= 400,
            timeout=30,
            interval=0.01,
            what="ingest to store some readings",
        )
        mark = len(ingest.log())
        down_started = time.monotonic()
        published_at_fault = pub.sent
        if fault == "postgres_restart":
            private.pg.stop("fast")
            stored_before = None
            ingest.wait_log("database unavailable", after=mark)
            time.sleep(1.0)
            private.pg.start()
        else:
            stored_before = scalar(dsn, "SELECT count(*) FROM reading")
            private.mosquitto.stop()  # SIGTERM: the broker writes its persistence file
            time.sleep(1.0)
            private.mosquitto.start()
            ingest.wait_log("session resumed", after=mark, timeout=40)
        downtime_ms = int((time.monotonic() - down_started) * 1000)
        pub.finish(timeout=60)
        wait_for(
            lambda: (try_scalar(dsn, "SELECT count(*) FROM reading") or 0) >= load.total,
            timeout=60,
            what="every reading stored after the restart",
        )
        time.sleep(0.5)
    finally:
        pub.close()
    counts = reading_counts(dsn, load)
    alarms = assert_alarms_once(dsn, load)
    report(
        fault,
        **counts,
        published_before_fault=published_at_fault,
        downtime_ms=downtime_ms,
        republished=pub.republished,
        **alarms,
    )
    assert published_at_fault < load.total, "the fault must land while messages are in flight"
    assert counts == {"published": load.total, "stored": load.total, "duplicates": 0, "lost": 0, "unexpected": 0}
    assert stored_before is None or stored_before < load.total
    if fault == "postgres_restart":
        assert "database unavailable" in ingest.log()


# --------------------------------------------------------------------------------------------------------------
# Notify faults
# --------------------------------------------------------------------------------------------------------------


def _raise_gas_alarms(port: int, prefix: str, devices: int) -> None:
    """One reading at 30 %LEL with the detector's own alarm flag from each gas detector (GAS-02 at once): one
    gas_leak alarm each, one notification each."""
    load = Load(prefix, total=devices, devices=tuple(f"gas-{i:02d}" for i in range(1, devices + 1)))
    body = json.dumps({"seq": 0, "gas": True, "gas_lel": 30.0}).encode()
    load.payloads = [(d, 0, body) for d, _, _ in load.payloads]
    _publish_all(port, load)


def all_sent(dsn: str, at_least: int) -> bool:
    """At least this many notifications for w1, and none of them pending."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM notification WHERE worker_id = 'w1'"
        ).fetchone()
    assert row is not None
    return bool(row[0] >= at_least and row[0] == row[1])


def notification_counts(dsn: str, hook: Webhook) -> dict[str, int]:
    """notifications (rows for w1) / sent / received at the webhook / lost / doubled."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT n.id, n.status, (SELECT count(*) FROM delivery_attempt d WHERE "
            "d.notification_id = n.id AND d.ok) FROM notification n WHERE n.worker_id = 'w1'"
        ).fetchall()
        alarms = [r[0] for r in conn.execute("SELECT id FROM alarm").fetchall()]
    received = Counter(hook.alarm_ids())
    return {
        "notifications": len(rows),
        "sent": sum(1 for _, status, _ in rows if status == "sent"),
        "received": sum(received.values()),
        "lost": sum(1 for a in alarms if received[a] == 0) + sum(1 for _, status, _ in rows if status != "sent"),
        "doubled": sum(received.values()) - len(rows),
        # a notification the database recorded as delivered must never be sent again
        "recorded_twice": sum(1 for _, _, ok in rows if ok != 1),
    }


def _start_ingest_and_notify(
    services: Services, dsn: str, prefix: str, tag: str, tmp_path: Path, parts: list[Part]
) -> Part:
    env = part_env(dsn, services.mqtt_url, prefix, f"ingest-{tag}")
    ingest = Part("ingest", env, tmp_path / "ingest.log").start()
    notify = Part("notify", env, tmp_path / "notify.log").start()
    parts.extend([ingest, notify])
    ingest.wait_log("connected to mqtt")
    return notify


def test_receiver_down_then_every_notification_delivered_once(
    services: Services, database_url: str, tag: str, tmp_path: Path, parts: list[Part]
) -> None:
    """The workers' webhook is unreachable (port closed) for a while: attempts fail and are recorded, retries
    back off, and once it is back every notification arrives exactly once."""
    hook = Webhook()
    devices = 5
    try:
        load_registry(database_url, fault_registry(hook.base, gas_devices=devices))
        hook.down()
        prefix = f"t{tag}/gw/v1"
        _start_ingest_and_notify(services, database_url, prefix, tag, tmp_path, parts)
        _raise_gas_alarms(services.mqtt_port, prefix, devices)
        wait_for(
            lambda: (
                scalar(database_url, "SELECT count(DISTINCT notification_id) FROM delivery_attempt WHERE NOT ok")
                >= devices
            ),
            timeout=30,
            what="failed attempts",
        )
        time.sleep(1.0)  # stays down past the first retry
        failed_while_down = scalar(database_url, "SELECT count(*) FROM delivery_attempt WHERE NOT ok")
        hook.up()
        wait_for(
            lambda: all_sent(database_url, devices),
            timeout=40,
            what="every notification delivered after the receiver came back",
        )
        time.sleep(0.5)  # a second delivery of anything would arrive by now
        counts = notification_counts(database_url, hook)
    finally:
        hook.down()
    report("receiver_down", **counts, failed_attempts=failed_while_down)
    assert failed_while_down >= devices
    assert counts["notifications"] >= devices
    assert counts["lost"] == 0 and counts["doubled"] == 0 and counts["recorded_twice"] == 0
    assert counts["received"] == counts["sent"] == counts["notifications"]


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_notify_killed_mid_delivery_loses_nothing(
    services: Services, database_url: str, tag: str, tmp_path: Path, parts: list[Part], how: str
) -> None:
    """notify stopped while deliveries are in flight (the webhook has the message, notify has no answer yet).

    What "doubled" means: delivery is at least once. The receiver accepting a request and notify committing
    `sent` cannot be one atomic step with an external webhook, so a hard kill between the two re-sends the
    deliveries of the transaction that was in flight — and only those: a notification recorded as delivered
    is never sent again (recorded_twice = 0), nothing is lost, and doubles are bounded by what was in flight
    at the kill. A graceful stop (SIGTERM) finishes and records the deliveries in flight: no double at all.
    """
    hook = Webhook()
    devices = 6
    try:
        load_registry(database_url, fault_registry(hook.base, gas_devices=devices))
        prefix = f"t{tag}/gw/v1"
        hook.delay_s = 1.5  # the receiver has it; notify waits for the answer
        notify = _start_ingest_and_notify(services, database_url, prefix, tag, tmp_path, parts)
        _raise_gas_alarms(services.mqtt_port, prefix, devices)
        assert hook.in_handler.wait(30), "no delivery started"
        time.sleep(0.3)
        in_flight = len(hook.received)
        if how == "sigkill":
            notify.kill()
        else:
            assert notify.proc is not None
            notify.proc.terminate()
            notify.proc.wait(timeout=20)
        committed_before = scalar(database_url, "SELECT count(*) FROM notification WHERE status = 'sent'")
        hook.delay_s = 0
        notify.start()
        wait_for(
            lambda: all_sent(database_url, devices), timeout=40, what="every notification delivered after the restart"
        )
        time.sleep(1.0)
        counts = notification_counts(database_url, hook)
    finally:
        hook.down()
    report(f"notify_{how}", **counts, in_flight_at_stop=in_flight, committed_before_restart=committed_before)
    assert counts["notifications"] >= devices
    assert counts["lost"] == 0 and counts["recorded_twice"] == 0
    assert counts["sent"] == counts["notifications"]
    if how == "sigkill":
        assert counts["doubled"] <= in_flight, "only the deliveries in flight at the kill may be repeated"
    else:
        assert counts["doubled"] == 0, "a graceful stop records what it delivered"
