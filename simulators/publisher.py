"""MQTT publishing for simulators: bounded QoS-1 in flight, reconnects, last will, retained online status.

paho-mqtt 2.2 silently loses QoS-1 messages past 65,535 outstanding in one client (its message-id
counter wraps; STYLE.md, measured). Every publish here first takes a slot from a semaphore that the
PUBACK (on_publish) gives back, so a link never has more than `max_inflight` messages outstanding,
and a publisher that outruns the broker blocks instead of losing messages.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import GridwatchError
from core.settings import MqttTarget
from simulators.formats import Out

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 1_000  # far below paho's 65,535 message-id space


class PublishError(GridwatchError):
    """The broker could not be reached or refused us."""


@dataclass
class LinkStats:
    published: int = 0
    acked: int = 0
    errors: int = 0
    reconnects: int = 0
    last_error: str = ""


@dataclass
class MqttLink:
    """One MQTT connection: for one device (with its last will) or shared by many devices of a fleet."""

    url: str
    client_id: str = field(default_factory=lambda: f"gwsim-{uuid.uuid4().hex[:10]}")
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    will: Out | None = None
    on_connect_messages: Sequence[Out] = ()
    subscriptions: Sequence[str] = ()
    on_message: Callable[[str, bytes], None] | None = None
    ca_file: str | None = None
    keepalive: int = 30

    def __post_init__(self) -> None:
        self.target = MqttTarget(self.url)
        self.stats = LinkStats()
        self._slots = threading.BoundedSemaphore(self.max_inflight)
        self._lock = threading.Lock()
        self._inflight = 0
        self._slotless: set[int] = set()  # on-connect messages, sent from the network thread without a slot
        self._idle = threading.Condition(self._lock)
        self.connected = threading.Event()
        self._ever_connected = False
        self.fatal: str | None = None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.target.username:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set(ca_certs=self.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        # paho's own queue stays within what the semaphore lets through.
        client.max_inflight_messages_set(min(self.max_inflight, 65_535))
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if self.will is not None:
            client.will_set(self.will.topic, self.will.payload, qos=1, retain=self.will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message_cb
        self.client = client

    # --- callbacks (paho's network thread: never block here) -----------------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            self.fatal = f"broker refused the connection: {reason.getName()}"
            self.stats.last_error = self.fatal
            log.warning("%s (%s)", self.fatal, self.client_id)
            return
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        for out in self.on_connect_messages:
            self._send(out, take_slot=False)
        self.connected.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.info(
                "mqtt link %s lost (%s); paho reconnects and resends what is in flight",
                self.client_id,
                reason.getName(),
            )

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, _mid: int, _reason: Any, _props: Any) -> None:
        with self._lock:
            self._inflight -= 1
            self.stats.acked += 1
            if self._inflight <= 0:
                self._idle.notify_all()
            slotless = _mid in self._slotless
            self._slotless.discard(_mid)
        if not slotless:
            self._slots.release()

    def _on_message_cb(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_message is not None:
            self.on_message(msg.topic, bytes(msg.payload))

    # --- API -----------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> MqttLink:
        """Connect (raising PublishError if the broker cannot be reached) and start the network loop."""
        try:
            self.client.connect(self.target.host, self.target.port, keepalive=self.keepalive)
        except OSError as exc:
            raise PublishError(f"cannot reach mqtt broker {self.target.host}:{self.target.port}: {exc}") from exc
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.client.loop_stop()
            raise PublishError(self.fatal or f"no CONNACK from {self.target.host}:{self.target.port} in {timeout} s")
        return self

    def _send(self, out: Out, *, take_slot: bool) -> bool:
        with self._lock:
            self._inflight += 1
            self.stats.published += 1
        info = self.client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        if not take_slot:
            with self._lock:
                self._slotless.add(info.mid)
        # NO_CONN: paho keeps the QoS-1 message and sends it after the reconnect.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            with self._lock:
                self._inflight -= 1
                self.stats.errors += 1
                self.stats.last_error = mqtt.error_string(info.rc)
            if take_slot:
                self._slots.release()
            return False
        return True

    def publish(self, out: Out, timeout: float = 60.0) -> bool:
        """Publish, waiting for a free in-flight slot; False (and counted as an error) if none came."""
        if not self._slots.acquire(timeout=timeout):
            with self._lock:
                self.stats.errors += 1
                self.stats.last_error = f"no PUBACK freed a slot within {timeout} s"
            return False
        return self._send(out, take_slot=True)

    def publish_many(self, outs: Sequence[Out]) -> int:
        return sum(1 for o in outs if self.publish(o))

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every published message is acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.5))
        return True

    def close(self, *, with_will: bool = False, flush_timeout: float = 30.0) -> bool:
        """Disconnect; with_will asks the broker to publish our last will (MQTT v5 reason 0x04), as when
        a device loses power. Returns whether everything published was acknowledged."""
        flushed = self.flush(flush_timeout)
        if with_will:
            self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        return flushed


def clear_retained(url: str, topics: Sequence[str]) -> None:
    """Delete retained messages (an empty retained payload), e.g. the status topics a run left behind."""
    if not topics:
        return
    link = MqttLink(url).start()
    try:
        for topic in topics:
            link.publish(Out(topic, b"", retain=True))
    finally:
        link.close()
