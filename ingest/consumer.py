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
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
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


class ReceiveClient(mqtt.Client):
    """paho's client with a cheaper receive path for a high-rate QoS-1 subscriber (measured in bench/).

    Stock paho 2.2 reads every packet with three recv() calls (command byte, length byte, body), handles one
    packet per select() wake-up, and builds a full MQTT v5 `Properties` object for every PUBLISH, even one with
    no properties — together most of the ~60 µs of CPU the bare subscriber spends on a message. Here the
    socket is read in 64 KiB chunks, every complete packet in the buffer is handled per wake-up, and a QoS-1
    PUBLISH whose property length is 0 skips the Properties object (any other PUBLISH takes paho's own path).
    Messages go straight to on_message (no per-topic callbacks are used, so paho's topic-filter walk is skipped).
    The wire behaviour is unchanged: the same packets are read in the same order and acknowledged the same way.
    """

    RECV_CHUNK = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx = b""
        self._rx_pos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rx_pos >= len(self._rx):
            self._rx = super()._sock_recv(self.RECV_CHUNK)  # BlockingIOError / OSError as paho expects them
            self._rx_pos = 0
            if not self._rx:
                return b""  # the connection closed
        start = self._rx_pos
        self._rx_pos = min(start + bufsize, len(self._rx))
        return self._rx[start:self._rx_pos]

    def _sock_close(self) -> None:
        self._rx, self._rx_pos = b"", 0  # bytes of a closed connection must never be read as the next one's
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # Packets already in the buffer will not wake select() again: handle them now.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._rx_pos < len(self._rx):
            rc = super().loop_read(max_packets)
        return rc

    def message_callback_add(self, sub: str, callback: Any) -> None:
        """Not used by gridwatch: _handle_on_message below skips paho's per-topic callback matching."""
        raise NotImplementedError("ReceiveClient delivers every message to on_message")

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho walks its topic-filter tree for per-topic callbacks on every message (none are registered here).
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def _handle_publish(self) -> MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        # Fast path: MQTT 5 QoS 1 (spec 3.3.2: topic length + topic, packet id, property length 0, payload).
        if self._protocol != mqtt.MQTTv5 or (header & 0x06) != 0x02 or not self._manual_ack or len(packet) < 5:
            return super()._handle_publish()
        topic_len = (packet[0] << 8) | packet[1]
        pos = 2 + topic_len
        if topic_len == 0 or len(packet) < pos + 3 or packet[pos + 2] != 0:
            return super()._handle_publish()  # topic alias or properties present, or malformed: paho decides
        message = mqtt.MQTTMessage(mid=(packet[pos] << 8) | packet[pos + 1], topic=bytes(packet[2:pos]))
        message.qos = 1
        message.dup = bool(header & 0x08)
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[pos + 3:])
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS  # manual ack: the PUBACK goes out after the commit


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
        self.client = ReceiveClient(CallbackAPIVersion.VERSION2, client_id=client_id,
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
