"""Publishes pending commands to the devices, QoS 1 (the rules part runs it).

A command row is claimed FOR UPDATE SKIP LOCKED (several processes never send one twice), published in the
device's own dialect (the `encode` function the composition root hands in: ingest.adapters.encode_command, which
knows every bridge), and marked sent in the same transaction only once the broker has acknowledged it: a crash in
between republishes (devices dedupe by command id). A command the device's bridge cannot carry fails at once
with the reason and raises actuation_failed, instead of blocking the commands behind it. Confirmation comes back
on cmd/ack (ingest -> rules_service.apply_command_acks) or in the device's next state.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import psycopg

from core import repo as core_repo
from core.domain import Device
from core.loop import Check, Loop
from core.settings import Settings
from rules import service as rules_service
from rules.actuation import service as actuation

log = logging.getLogger(__name__)


class CommandNotSentError(TimeoutError):
    """The broker did not acknowledge a command in time (the row stays pending and is published again)."""


class Encode(Protocol):
    """A command in a device's dialect: the (topic, payload) messages that carry it; ValueError if its bridge
    cannot carry the action."""

    def __call__(
        self, device: Device, *, action: str, command_id: str, alarm_id: int | None, reason: str
    ) -> list[tuple[str, bytes]]: ...


class Actuator:
    """Polls for pending commands every poll_s and publishes them."""

    def __init__(self, settings: Settings, *, encode: Encode, poll_s: float = 0.2, batch: int = 100) -> None:
        self.settings = settings
        self.encode = encode
        self.poll_s = poll_s
        self.batch = batch
        self.published = 0
        self.fatal: Exception | None = None
        self.loop: Loop[psycopg.Connection[Any]] = Loop("actuator", self, probe=self._broker_problem)
        # Its own broker account (GRIDWATCH_MQTT_COMMAND_URL): the shipped broker binds client ids to accounts, so
        # sharing the ingest's would have the two connections throw each other off.
        target = settings.mqtt_command
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
            client_id=f"{settings.mqtt_client_id}-act-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
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
                try:
                    messages = self.encode(
                        device, action=c.action, command_id=c.id, alarm_id=c.alarm_id, reason=c.reason
                    )
                except ValueError as exc:
                    self._cannot_carry(conn, device, c.id, str(exc))
                    continue
                for topic, payload in messages:
                    info = self.client.publish(topic, payload, qos=1)
                    info.wait_for_publish(timeout=5)
                    if not info.is_published():
                        raise CommandNotSentError(f"broker did not acknowledge command {c.id} to {topic}")
                sent.append(c.id)
                log.info("published %s to %s (command %s)", c.action, c.device_id, c.id)
            actuation.mark_sent(conn, ids=sent, at=datetime.now(UTC))
        self.published += len(sent)
        return len(sent)

    def _cannot_carry(self, conn: psycopg.Connection[Any], device: Device, command_id: str, why: str) -> None:
        log.error("command %s to %s cannot be sent: %s", command_id, device.id, why)
        failed = actuation.fail(conn, command_id=command_id, detail=f"cannot be sent: {why}", at=datetime.now(UTC))
        if failed is not None:
            rules_service.raise_actuation_failed(
                conn, device=device, command=failed, at=failed.done_at or datetime.now(UTC)
            )

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
        target = self.settings.mqtt_command
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
