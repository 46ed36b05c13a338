"""The MQTT side of ingest: paho v2 client, persistent session, manual acks, bounded blocking queue.

Shaped like Home Assistant's MQTT client (own reconnect handling, resubscribe on every connect, stop on
bad credentials) and aiomqtt (the callback only wraps the message and hands it on).
"""

from __future__ import annotations

import logging
import queue
import ssl
import struct
import threading
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.errors import BrokerAuthError
from core.settings import MqttTarget
from ingest.decode import Message

log = logging.getLogger(__name__)

# MQTT v5 reason codes after which reconnecting cannot succeed (spec 3.2.2.2).
FATAL_CONNECT_CODES = {"Bad user name or password", "Not authorized", "Client identifier not valid",
                       "Banned", "Bad authentication method"}
SESSION_EXPIRY_S = 7 * 24 * 3600
PUBACK = 0x40  # MQTT control packet type 4 (spec 2.1.2), as paho's client.PUBACK
_PUBACK = struct.Struct("!BBH")


class MqttConsumer:
    """Subscribes with QoS 1 and puts every message into a bounded queue; acks only when told."""

    def __init__(self, target: MqttTarget, *, client_id: str, topics: list[str], out: queue.Queue[Message],
                 receive_maximum: int, ca_file: str | None = None, keepalive: int = 30) -> None:
        self.target = target
        self.topics = topics
        self.out = out
        self.generation = 0
        self.connected = threading.Event()
        self.fatal: BrokerAuthError | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.keepalive = keepalive
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        if target.tls:
            self.client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(receive_maximum)
        self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._props.SessionExpiryInterval = SESSION_EXPIRY_S
        # Mosquitto sends only Receive Maximum unacknowledged QoS-1 messages (STYLE.md, measured): this
        # bounds a batch, so it is sized to the batch.
        self._props.ReceiveMaximum = receive_maximum

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                    _props: Any) -> None:
        if reason.is_failure:
            name = reason.getName()
            if name in FATAL_CONNECT_CODES:
                self.fatal = BrokerAuthError(f"broker refused the connection: {name}; check GRIDWATCH_MQTT_URL "
                                             "credentials (not retrying)")
                log.error("%s", self.fatal)
                self._stopping = True
                client.disconnect()
            else:
                log.warning("broker refused the connection: %s; retrying", name)
            return
        self.generation += 1
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])
        self.connected.set()
        log.info("connected to mqtt %s:%s (session %s), subscribed to %s", self.target.host, self.target.port,
                 "resumed" if _flags.session_present else "new", ", ".join(self.topics))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                       _props: Any) -> None:
        self.connected.clear()
        if not self._stopping:
            log.warning("mqtt connection lost (%s); paho reconnects", reason.getName())

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Blocking put: a full queue holds the network thread, the broker stops sending (Receive Maximum)
        # and keeps the rest. A safety system never drops here.
        self.out.put(Message(topic=msg.topic, payload=bytes(msg.payload), received_at=datetime.now(UTC), mid=msg.mid,
                             qos=msg.qos, generation=self.generation, retain=bool(msg.retain)))

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge committed messages of the current connection; older ones come back and are absorbed."""
        generation = self.generation
        mids = [m.mid for m in messages if m.qos == 1 and m.generation == generation]
        queue_packet = getattr(self.client, "_packet_queue", None)
        if mids and queue_packet is not None:
            # The batch's PUBACKs as one write: exactly the bytes client.ack() would queue one by one (fixed
            # header, remaining length 2, packet id; MQTT 5 omits reason code 0), but one wake-up of the
            # network thread and one send() instead of one each per message (bench/: ~15 µs CPU a message).
            queue_packet(PUBACK, b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids]), 0, 1)
        else:
            for mid in mids:
                self.client.ack(mid, 1)
        acked = len(mids)
        for m in messages:
            if m.qos == 2 and m.generation == generation:
                self.client.ack(m.mid, m.qos)
                acked += 1
        return acked

    def _run(self) -> None:
        delay = 1.0
        while not self._stopping:
            try:
                self.client.connect(self.target.host, self.target.port, keepalive=self.keepalive,
                                    clean_start=False, properties=self._props)
            except OSError as exc:
                log.warning("cannot reach mqtt %s:%s (%s); retrying in %.0f s", self.target.host,
                            self.target.port, exc, delay)
                threading.Event().wait(delay)
                delay = min(delay * 2, 30)
                continue
            delay = 1.0
            self.client.loop_forever(retry_first_connection=True)

    def start(self) -> None:
        """Connect and run the network loop in a thread."""
        self._thread = threading.Thread(target=self._run, name="mqtt-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect; unacknowledged messages stay with the broker's session."""
        self._stopping = True
        self.client.disconnect()
        if self._thread:
            self._thread.join(timeout=5)
