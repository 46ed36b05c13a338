"""Test helpers: a local notification receiver, an MQTT publisher, waiting, readings into the rules."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import psycopg

from core import repo as core_repo
from core.domain import Reading
from core.registry import parse_registry
from core.settings import Settings
from ingest.adapters import encode_command
from rules import service as rules_service
from rules.actuation.publisher import Actuator
from rules.ruleset import default_rules

T = TypeVar("T")


def load_registry(settings: Settings, text: str) -> Settings:
    """Upsert a registry (YAML text) into the test's database; returns the settings, for fixtures."""
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        core_repo.upsert_registry(conn, registry=parse_registry(text))
    return settings


def feed(settings: Settings, device: str, at: Any, **fields: Any) -> list[rules_service.AlarmChange]:
    """One reading straight into the rules transaction (the ingest path without MQTT), received when it was
    taken. Fields outside the contract (`co`, `silence`, ...) go into extras, as the decoder puts them."""
    known = {k: v for k, v in fields.items() if k in Reading.__slots__}
    extras = {k: v for k, v in fields.items() if k not in known}
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        devices = core_repo.get_devices(conn, ids=[device])
        reading = Reading(device_id=device, ts=at, received_at=at, extras=extras, **known)
        return rules_service.apply_readings(conn, readings=[reading], devices=devices, ruleset=default_rules())


class Receiver:
    """A real HTTP server that apprise json:// delivers to; records what arrived per path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], float]] = []
        self.status = 200
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if outer.status == 200:
                    try:
                        data = json.loads(body)
                    except ValueError:
                        data = {"raw": body.decode(errors="replace")}
                    with outer._lock:
                        outer.received.append((self.path, data, time.monotonic()))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def for_path(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for p, d, _ in self.received if p == "/" + path.lstrip("/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Publisher:
    """A paho publisher that waits for each PUBACK (bounded in flight)."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(
        self,
        topic: str,
        payload: str | bytes | dict[str, Any],
        *,
        qos: int = 1,
        retain: bool = False,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if wait:
            info.wait_for_publish(timeout=10)
        return info

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


MEETING_ORPHANS = """
SELECT (SELECT count(*) FROM alarm_event e WHERE NOT EXISTS (SELECT 1 FROM alarm a WHERE a.id = e.alarm_id))
     + (SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM alarm a WHERE a.id = o.alarm_id))
     + (SELECT count(*) FROM outbox o WHERE o.event_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM alarm_event e WHERE e.id = o.event_id AND e.alarm_id = o.alarm_id AND e.kind = o.kind))
"""


def meeting_orphans(dsn: str) -> int:
    """Events and outbox rows whose alarm, or whose announced event of that alarm and kind, is missing: what the
    foreign keys migration 0330 dropped used to refuse. Always 0."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(MEETING_ORPHANS).fetchone()
    assert row is not None
    return int(row[0])


def set_device_state(conn: psycopg.Connection[Any], device_id: str, **columns: Any) -> None:
    """Stand in for what rules records of a device (online, last_seen_at, status_at): its device_state row,
    created if the device has not been heard from yet (rules creates it with the first message)."""
    names = ", ".join(columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
    conn.execute(
        f"INSERT INTO device_state (device_id, {names}) VALUES (%s{', %s' * len(columns)}) "
        f"ON CONFLICT (device_id) DO UPDATE SET {updates}",
        (device_id, *columns.values()),
    )


def make_actuator(settings: Settings, **kwargs: Any) -> Actuator:
    """The command publisher as `serve` wires it: ingest's dialect encoder handed to rules' publisher."""
    encode = partial(encode_command, prefix=settings.topic_prefix, bridge_root=settings.bridge_topic_root)
    return Actuator(settings, encode=encode, **kwargs)


def wait_for(fn: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll fn until it returns something truthy; fail with what after timeout."""
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)
        last = fn()
    return last
