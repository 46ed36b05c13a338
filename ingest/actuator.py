"""Publishes pending commands (rules' `command` rows) to the devices on gw/v1/{device}/cmd, QoS 1.

A command row is claimed FOR UPDATE SKIP LOCKED (several ingest processes never send one twice), published
in the device's own dialect (ingest.adapters.encode_command), and marked sent in the same transaction only
once the broker has acknowledged it: a crash in between republishes (devices dedupe by command id).
Confirmation comes back on cmd/ack (ingest -> rules_service.apply_command_acks) or in the next reading.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from core import repo as core_repo
from core.loop import Check, Loop
from core.settings import Settings
from ingest import adapters
from rules import actuation

log = logging.getLogger(__name__)


class CommandNotSentError(TimeoutError):
    """The broker did not acknowledge a command in time (the row stays pending and is published again)."""


class Actuator:
    """Polls for pending commands every poll_s and publishes them."""

    def __init__(self, settings: Settings, *, poll_s: float = 0.2, batch: int = 100) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.batch = batch
        self.published = 0
        self.fatal: Exception | None = None
        self.loop: Loop[psycopg.Connection[Any]] = Loop("actuator", self, probe=self._broker_problem)
        target = settings.mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                                  client_id=f"{settings.mqtt_client_id}-act-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        if target.tls:
            self.client.tls_set(ca_certs=settings.mqtt_ca_file)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)

    def publish_pending(self, conn: psycopg.Connection[Any]) -> int:
        """One pass: claim, publish, mark sent; returns how many were published."""
        with conn.transaction():
            commands = actuation.claim_pending(conn, limit=self.batch)
            if not commands:
                return 0
            devices = core_repo.get_devices(conn, ids=[c.device_id for c in commands])
            sent = []
            for c in commands:
                device = devices.get(c.device_id)
                if device is None:
                    continue
                for topic, payload in adapters.encode_command(device, action=c.action, command_id=c.id,
                                                              alarm_id=c.alarm_id, reason=c.reason,
                                                              prefix=self.settings.topic_prefix):
                    info = self.client.publish(topic, payload, qos=1)
                    info.wait_for_publish(timeout=5)
                    if not info.is_published():
                        raise CommandNotSentError(f"broker did not acknowledge command {c.id} to {topic}")
                sent.append(c.id)
                log.info("published %s to %s (command %s)", c.action, c.device_id, c.id)
            actuation.mark_sent(conn, ids=sent, at=datetime.now(UTC))
        self.published += len(sent)
        return len(sent)

    def open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.settings.dsn, autocommit=False)

    def step(self, conn: psycopg.Connection[Any]) -> float:
        return 0.0 if self.publish_pending(conn) else self.poll_s

    def close(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()

    def _broker_problem(self) -> str | None:
        return None if self.client.is_connected() else "not connected to the broker"

    def start(self) -> None:
        """Connect to the broker and run in a daemon thread."""
        target = self.settings.mqtt
        self.client.connect_async(target.host, target.port)
        self.client.loop_start()
        self.loop.start()

    def stop(self) -> None:
        """Stop publishing and disconnect."""
        self.loop.stop()
        self.client.loop_stop()
        self.client.disconnect()

    def checks(self) -> list[Check]:
        """Health for `gridwatch health`."""
        return [self.loop.check()]
