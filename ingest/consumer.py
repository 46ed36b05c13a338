"""The MQTT side of ingest: paho v2 client, persistent session, manual acks, bounded blocking inbox.

Shaped like Home Assistant's MQTT client (own reconnect handling, resubscribe on every connect, stop on
bad credentials) and aiomqtt (the callback only wraps the message and hands it on).
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

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
FATAL_CONNECT_CODES = {
    "Bad user name or password",
    "Not authorized",
    "Client identifier not valid",
    "Banned",
    "Bad authentication method",
}
SESSION_EXPIRY_S = 7 * 24 * 3600
PUBACK = 0x40  # MQTT control packet type 4 (spec 2.1.2), as paho's client.PUBACK
_PUBACK = struct.Struct("!BBH")


class ReceiveClient(mqtt.Client):
    """paho's client with a cheaper receive path for a high-rate QoS-1 subscriber (docs/scaling.md).

    Stock paho 2.2 reads every packet with three recv() calls (command byte, length byte, body), handles one
    packet per select() wake-up, and builds a full MQTT v5 `Properties` object for every PUBLISH, even one with
    no properties — together most of the CPU the bare subscriber spends on a message. Here the
    socket is read in 64 KiB chunks, every complete packet in the buffer is handled per wake-up, and a QoS-1
    PUBLISH whose property length is 0 skips the Properties object (any other PUBLISH takes paho's own path).
    Messages go straight to on_message (no per-topic callbacks are used, so paho's topic-filter walk is skipped).

    With `on_batch` set (as ingest runs it) messages arrive as lists of ingest Messages instead: every complete
    QoS-1 PUBLISH without properties in a network read is decoded right from the buffer into a Message, stamped
    with one receive time and handed over in one call (no MQTTMessage, no per-message callback, which cost a
    large share of the ingest's CPU in paho's per-packet path). A packet split across two reads, or any
    other packet, takes paho's path, and reaches on_batch as a list of one, in its place in the order.
    The wire behaviour is unchanged: the same packets are read in the same order and acknowledged the same way.
    """

    RECV_CHUNK = 65536

    def __init__(self, *args: Any, on_batch: Callable[[list[Message]], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx = b""
        self._rx_pos = 0
        self.on_batch = on_batch
        self.generation = 0  # stamped on every Message: the connection it came on (set by the owner on connect)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rx_pos >= len(self._rx):
            self._rx = super()._sock_recv(self.RECV_CHUNK)  # BlockingIOError / OSError as paho expects them
            self._rx_pos = 0
            if not self._rx:
                return b""  # the connection closed
        start = self._rx_pos
        self._rx_pos = min(start + bufsize, len(self._rx))
        return self._rx[start : self._rx_pos]

    def _sock_close(self) -> None:
        self._rx, self._rx_pos = b"", 0  # bytes of a closed connection must never be read as the next one's
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # The fast path decodes MQTT 5 packets and leaves the PUBACK to the owner: only with both (as ingest runs).
        batching = self.on_batch is not None and self._protocol == mqtt.MQTTv5 and self._manual_ack
        if batching and self._sock is not None and self._between_packets() and self._rx_pos >= len(self._rx):
            try:
                self._rx, self._rx_pos = super()._sock_recv(self.RECV_CHUNK), 0
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except OSError:
                return super().loop_read(max_packets)  # paho's own read meets the error and handles it as always
            if not self._rx:
                return super().loop_read(max_packets)  # closed: paho reads nothing and says so
        # Packets already in the buffer will not wake select() again: handle them all now.
        while True:
            if batching and self._sock is not None and self._between_packets():
                self._deliver_publishes()
                if self._rx_pos >= len(self._rx):
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
            rc = super().loop_read(max_packets)  # one packet the fast path does not take, or a split one's rest
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is None or self._rx_pos >= len(self._rx):
                return rc

    def _between_packets(self) -> bool:
        return self._in_packet["command"] == 0  # paho holds no part of a packet

    def _deliver_publishes(self) -> None:
        """Decode the complete fast-path PUBLISHes at the front of the buffer and hand them over in one call;
        stop at the first packet that is incomplete or not one (paho reads that one)."""
        buf, pos, end = self._rx, self._rx_pos, len(self._rx)
        messages: list[Message] = []
        received_at = datetime.now(UTC)
        generation = self.generation
        while pos + 2 <= end:
            header = buf[pos]
            if header & 0xF6 != 0x32:  # PUBLISH with QoS 1 (dup and retain flags may be set)
                break
            length, shift, i = 0, 0, pos + 1
            while i < end and shift <= 21:  # remaining length: at most 4 bytes, 7 bits each (spec 1.5.5)
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break  # the length runs past the read (or is malformed: paho says so)
            body_end = i + length
            if body_end > end or length < 5:
                break
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
            if topic_end == i + 2 or topic_end + 3 > body_end or buf[topic_end + 2] != 0:
                break  # topic alias or properties present, or malformed: paho decides
            try:
                topic = buf[i + 2 : topic_end].decode()
            except UnicodeDecodeError:
                break
            messages.append(
                Message(
                    topic,
                    buf[topic_end + 3 : body_end],
                    received_at,
                    (buf[topic_end] << 8) | buf[topic_end + 1],
                    1,
                    generation,
                    bool(header & 0x01),
                )
            )
            pos = body_end
        if not messages:
            return
        self._rx_pos = pos
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        with self._in_callback_mutex:
            self.on_batch(messages)  # type: ignore[misc]  # checked by the caller

    def message_callback_add(self, sub: str, callback: Any) -> None:
        """Not used by gridwatch: _handle_on_message below skips paho's per-topic callback matching."""
        raise NotImplementedError("ReceiveClient delivers every message to on_message")

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho walks its topic-filter tree for per-topic callbacks on every message (none are registered here).
        if self.on_batch is not None:
            with self._in_callback_mutex:
                self.on_batch(
                    [
                        Message(
                            topic=message.topic,
                            payload=bytes(message.payload),
                            received_at=datetime.now(UTC),
                            mid=message.mid,
                            qos=message.qos,
                            generation=self.generation,
                            retain=bool(message.retain),
                        )
                    ]
                )
            return
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
        message.payload = bytes(packet[pos + 3 :])
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS  # manual ack: the PUBACK goes out after the commit


class StockClient(mqtt.Client):
    """paho as shipped, for a paho whose private names ReceiveClient does not know: every message goes through
    paho's own decoding and reaches on_batch as a list of one (slower, the same messages and acknowledgements)."""

    def __init__(self, *args: Any, on_batch: Callable[[list[Message]], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_batch = on_batch
        self.generation = 0
        self.on_message = self._to_batch

    def _to_batch(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.on_batch is not None:
            self.on_batch(
                [
                    Message(
                        topic=message.topic,
                        payload=bytes(message.payload),
                        received_at=datetime.now(UTC),
                        mid=message.mid,
                        qos=message.qos,
                        generation=self.generation,
                        retain=bool(message.retain),
                    )
                ]
            )


# What ReceiveClient reaches into: paho's methods it overrides or calls, and the attributes it reads. Verified on
# the paho-mqtt pinned in pyproject.toml; another release may name them differently (2.1 has _last_msg_in where
# 2.2 has _last_bytes_received, so keepalive accounting would silently break).
FAST_PATH_METHODS = ("_sock_recv", "_sock_close", "loop_read", "_handle_on_message", "_handle_publish", "_packet_queue")
FAST_PATH_ATTRIBUTES = (
    "_protocol",
    "_manual_ack",
    "_sock",
    "_in_packet",
    "_msgtime_mutex",
    "_last_bytes_received",
    "_in_callback_mutex",
    "_userdata",
)


def fast_path_problem(client_cls: type[mqtt.Client] = mqtt.Client) -> str | None:
    """Why ReceiveClient cannot run on this paho (the private names it needs are missing), or None."""
    client = client_cls(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    missing = [n for n in FAST_PATH_METHODS if not callable(getattr(client, n, None))]
    missing += [n for n in FAST_PATH_ATTRIBUTES if not hasattr(client, n)]
    if not isinstance(getattr(client, "_in_packet", None), dict) or "command" not in client._in_packet:
        missing.append("_in_packet['command']")
    if not missing:
        return None
    return f"paho-mqtt {getattr(mqtt, '__version__', '?')} lacks {', '.join(missing)}"


_CHOSEN: list[type[mqtt.Client]] = []


def receive_client_class() -> type[mqtt.Client]:
    """ReceiveClient where this paho has what it needs, else stock paho with one warning per process."""
    if not _CHOSEN:
        problem = fast_path_problem()
        if problem:
            log.warning(
                "%s: receiving through stock paho instead of the fast path (correct, slower); install the "
                "paho-mqtt version pyproject.toml pins",
                problem,
            )
        _CHOSEN.append(StockClient if problem else ReceiveClient)
    return _CHOSEN[0]


class Inbox:
    """The bounded hand-off from the network thread to the writers: messages go in as each network read's list
    and come out as batches, one lock round trip each (queue.Queue takes two lock round trips and a condition
    wait a message, a measurable share of the ingest's CPU).

    put_many blocks while the inbox is full, in messages or in payload bytes, so the bound holds to within one
    network read (at most 64 KiB of messages past it, or one message of up to the broker's max_packet_size). A
    full inbox holds the network thread, the broker stops sending (Receive Maximum) and keeps the rest: a safety
    system never drops here. The byte bound matters because Receive Maximum counts messages: thousands of 1 MiB
    payloads (which the decoder will reject) must not take the process's memory on their way there.
    """

    def __init__(self, maxsize: int, max_bytes: int | None = None) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[Message] = deque()
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    def _full(self) -> bool:
        return len(self._items) >= self.maxsize or (self.max_bytes is not None and self.bytes >= self.max_bytes)

    def put_many(self, messages: list[Message]) -> None:
        size = sum([len(m.payload) for m in messages]) if self.max_bytes is not None else 0
        with self._not_full:
            while self._full():
                self._not_full.wait()
            self._items.extend(messages)
            self.bytes += size
            self._not_empty.notify()

    def take(self, limit: int, *, timeout: float, linger: float = 0.0) -> list[Message]:
        """Up to `limit` messages in arrival order: waits up to `timeout` for the first, then up to `linger` more
        for the batch to fill; [] if nothing came."""
        with self._not_empty:
            if not self._items:
                deadline = time.monotonic() + timeout
                while not self._items:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self._not_empty.wait(remaining)
            if len(self._items) < limit and linger > 0:
                deadline = time.monotonic() + linger
                while len(self._items) < limit:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._not_empty.wait(remaining)
            items = self._items
            if len(items) <= limit:
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(limit)]
            if self.max_bytes is not None:
                self.bytes = max(0, self.bytes - sum([len(m.payload) for m in batch])) if items else 0
            self._not_full.notify()
            if items:
                self._not_empty.notify()  # another writer may take the rest
            return batch

    def qsize(self) -> int:
        return len(self._items)

    def items(self) -> list[Message]:
        """A copy of what waits here, in order."""
        with self._not_empty:
            return list(self._items)

    def empty(self) -> bool:
        return not self._items


class Receiver(Protocol):
    """Where the network thread hands each read's messages (an Inbox, or ingest.lanes.Lanes)."""

    def put_many(self, messages: list[Message]) -> None: ...


class MqttConsumer:
    """Subscribes with QoS 1 and hands every message to its receiver (a bounded Inbox, or the ingest's lanes); acks
    only when told."""

    def __init__(
        self,
        target: MqttTarget,
        *,
        client_id: str,
        topics: list[str],
        out: Receiver,
        receive_maximum: int,
        ca_file: str | None = None,
        keepalive: int = 30,
        client_cls: type[mqtt.Client] | None = None,
    ) -> None:
        self.target = target
        self.topics = topics
        self.out = out
        self.connected = threading.Event()  # set once the broker has granted the subscriptions (SUBACK)
        self._subscribe_mid: int | None = None
        self.fatal: BrokerAuthError | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.keepalive = keepalive
        cls = client_cls or receive_client_class()
        self.client: ReceiveClient | StockClient = cls(  # type: ignore[assignment,call-arg]
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
            on_batch=out.put_many,
        )
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        if target.tls:
            self.client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.max_inflight_messages_set(receive_maximum)
        self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._props.SessionExpiryInterval = SESSION_EXPIRY_S
        # Mosquitto sends only Receive Maximum unacknowledged QoS-1 messages (STYLE.md, measured): this
        # bounds a batch, so it is sized to the batch.
        self._props.ReceiveMaximum = receive_maximum

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            name = reason.getName()
            if name in FATAL_CONNECT_CODES:
                self.fatal = BrokerAuthError(
                    f"broker refused the connection: {name}; check GRIDWATCH_MQTT_URL credentials (not retrying)"
                )
                log.error("%s", self.fatal)
                self._stopping = True
                client.disconnect()
            else:
                log.warning("broker refused the connection: %s; retrying", name)
            return
        self.client.generation += 1
        _result, self._subscribe_mid = client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])
        log.info(
            "connected to mqtt %s:%s (session %s)",
            self.target.host,
            self.target.port,
            "resumed" if _flags.session_present else "new",
        )

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        """Connected means subscribed: a message published before the broker granted a topic would not reach us."""
        if mid != self._subscribe_mid:
            return
        refused = [t for t, r in zip(self.topics, reasons, strict=False) if r.is_failure]
        if refused:  # e.g. the broker's ACL does not grant the account a topic: its messages would never arrive
            log.error("the broker refused the subscription to %s", ", ".join(refused))
        log.info("subscribed to %s", ", ".join(t for t in self.topics if t not in refused))
        self.connected.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self.connected.clear()
        if not self._stopping:
            log.warning("mqtt connection lost (%s); paho reconnects", reason.getName())

    @property
    def generation(self) -> int:
        """How many times this consumer has connected: a Message from an earlier connection cannot be acked."""
        return self.client.generation

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge committed messages of the current connection; older ones come back and are absorbed."""
        generation = self.generation
        mids = [m.mid for m in messages if m.qos == 1 and m.generation == generation]
        if mids and isinstance(self.client, ReceiveClient):
            # The batch's PUBACKs as one write: exactly the bytes client.ack() would queue one by one (fixed
            # header, remaining length 2, packet id; MQTT 5 omits reason code 0), but one wake-up of the
            # network thread and one send() instead of one each per message.
            self.client._packet_queue(PUBACK, b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids]), 0, 1)
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
                self.client.connect(
                    self.target.host,
                    self.target.port,
                    keepalive=self.keepalive,
                    clean_start=False,
                    properties=self._props,
                )
            except OSError as exc:
                log.warning(
                    "cannot reach mqtt %s:%s (%s); retrying in %.0f s", self.target.host, self.target.port, exc, delay
                )
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
