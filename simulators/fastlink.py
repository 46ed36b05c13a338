"""A minimal MQTT 3.1.1 QoS-1 publisher for fleets: packets written in batches, PUBACKs read by a thread.

paho writes every PUBLISH with its own socket call and wakes its network thread for each one; on a
2-core machine that caps one process at a few thousand messages per second. A fleet only publishes
(QoS 1, no subscriptions, no will), which needs little of MQTT: CONNECT, PUBLISH, PUBACK, PINGREQ. This
link packs many PUBLISH packets into one write, keeps at most `max_inflight` unacknowledged (packet ids
are 16-bit: far below 65,535 by construction, so nothing is ever overwritten), resends what was in
flight with DUP after a reconnect (MQTT 3.1.1 4.4), and reports errors instead of dropping.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import OrderedDict

from simulators.formats import Out
from simulators.publisher import LinkStats, PublishError

log = logging.getLogger(__name__)

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def publish_packet(mid: int, topic: str, payload: bytes, *, retain: bool = False, dup: bool = False) -> bytes:
    """PUBLISH at QoS 1 (MQTT 3.1.1 3.3)."""
    header = 0x30 | 0x02 | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = _utf8(topic) + struct.pack("!H", mid) + payload
    return bytes([header]) + _varint(len(body)) + body


def connect_packet(client_id: str, keepalive: int, username: str | None, password: str | None) -> bytes:
    flags = 0x02  # clean session: a publisher has nothing to resume
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
        if password is not None:
            flags |= 0x40
            payload += _utf8(password)
    body = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return bytes([0x10]) + _varint(len(body)) + body


class FastLink:
    """Publish-only QoS-1 MQTT 3.1.1 connection with batched writes and a bounded in-flight window."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        max_inflight: int = 1_000,
        keepalive: int = 30,
        ca_file: str | None = None,
        batch_bytes: int = 64 * 1024,
    ) -> None:
        from core.settings import MqttTarget

        if not 1 <= max_inflight <= 60_000:
            raise ValueError("max_inflight must be 1..60000 (packet ids are 16-bit)")
        self.target = MqttTarget(url)
        self.client_id = client_id or f"gwfleet-{uuid.uuid4().hex[:10]}"
        self.max_inflight = max_inflight
        self.keepalive = keepalive
        self.ca_file = ca_file
        self.batch_bytes = batch_bytes
        self.stats = LinkStats()
        self._cond = threading.Condition()
        self._inflight: OrderedDict[int, bytes] = OrderedDict()  # mid -> packet (for resend)
        self._next_mid = 1
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._sock: socket.socket | ssl.SSLSocket | None = None
        self._write_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._closing = False
        self._last_write = time.monotonic()

    # --- connection ------------------------------------------------------------------------------------
    def _open(self) -> None:
        sock: socket.socket | ssl.SSLSocket = socket.create_connection((self.target.host, self.target.port), 10)
        if self.target.tls:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            sock = ctx.wrap_socket(sock, server_hostname=self.target.host)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(self.client_id, self.keepalive, self.target.username, self.target.password))
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            if not chunk:
                raise PublishError("the broker closed the connection before CONNACK")
            ack += chunk
        if ack[0] != 0x20 or ack[3] != 0:
            sock.close()
            raise PublishError(f"broker refused the connection: {CONNACK_CODES.get(ack[3], ack[3])}")
        sock.settimeout(None)
        self._sock = sock
        with self._cond:
            # MQTT 3.1.1 4.4: unacknowledged PUBLISH packets are re-sent with DUP set after a reconnect.
            resend = [bytes([p[0] | 0x08]) + p[1:] for p in self._inflight.values()]
        if resend:
            with self._write_lock:
                sock.sendall(b"".join(resend))

    def start(self) -> FastLink:
        """Connect (PublishError if the broker cannot be reached or refuses us) and start reading acks."""
        try:
            self._open()
        except OSError as exc:
            raise PublishError(f"cannot reach mqtt broker {self.target.host}:{self.target.port}: {exc}") from exc
        self._reader = threading.Thread(target=self._read_loop, name=f"fastlink-{self.client_id}", daemon=True)
        self._reader.start()
        return self

    def _reconnect(self) -> None:
        delay = 1.0
        while not self._closing:
            try:
                self._open()
            except (OSError, PublishError) as exc:
                self.stats.last_error = str(exc)
                log.info("fleet link %s: reconnect failed (%s); retrying in %.0f s", self.client_id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30)
            else:
                self.stats.reconnects += 1
                log.info("fleet link %s reconnected; resent %d in flight", self.client_id, len(self._inflight))
                return

    def _read_loop(self) -> None:
        buf = b""
        while not self._closing:
            sock = self._sock
            chunk = self._receive_chunk(sock)
            if not chunk:
                if self._closing:
                    return
                if sock is not None:
                    sock.close()
                self._reconnect()
                buf = b""
                continue
            buf += chunk
            acked, pos = self._settle_pubacks(buf)
            buf = buf[pos:]
            if acked:
                with self._cond:
                    self.stats.acked += acked
                    self._cond.notify_all()

    @staticmethod
    def _receive_chunk(sock: socket.socket | ssl.SSLSocket | None) -> bytes:
        """What the broker sent next; b"" when the connection is gone (or there is none)."""
        try:
            return sock.recv(65536) if sock is not None else b""
        except OSError:
            return b""

    def _settle_pubacks(self, buf: bytes) -> tuple[int, int]:
        """Clear the PUBACKs among buf's complete packets from in flight: (acknowledged, bytes consumed)."""
        acked = 0
        pos = 0
        while len(buf) - pos >= 2:
            kind = buf[pos] & 0xF0
            length, shift, i = 0, 0, pos + 1
            while i < len(buf):
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break
            if len(buf) - i < length:
                break
            if kind == 0x40 and length == 2:  # PUBACK
                mid = struct.unpack_from("!H", buf, i)[0]
                with self._cond:
                    if self._inflight.pop(mid, None) is not None:
                        acked += 1
            pos = i + length
        return acked, pos

    # --- publishing --------------------------------------------------------------------------------------
    def _take_mid(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._inflight) >= self.max_inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._send_buffer()  # what waits in our buffer cannot be acknowledged
                self._cond.wait(min(remaining, 0.1))
            mid = self._next_mid
            while mid in self._inflight:
                mid = mid % 65535 + 1
            self._next_mid = mid % 65535 + 1
            return mid

    def publish(self, out: Out, timeout: float = 60.0) -> bool:
        """Queue one QoS-1 message (written with the next batch); False and an error when no slot came."""
        mid = self._take_mid(timeout)
        if mid is None:
            self.stats.errors += 1
            self.stats.last_error = f"no PUBACK freed a slot within {timeout} s"
            return False
        packet = publish_packet(mid, out.topic, out.payload, retain=out.retain)
        with self._cond:
            self._inflight[mid] = packet
            self.stats.published += 1
        self._buffer.append(packet)
        self._buffered += len(packet)
        if self._buffered >= self.batch_bytes:
            self._send_buffer()
        return True

    def _send_buffer(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        sock = self._sock
        if sock is None:
            return  # not connected yet: the reconnect resends everything in flight
        try:
            with self._write_lock:
                sock.sendall(data)
            self._last_write = time.monotonic()
        except OSError as exc:
            # The reader notices the broken connection, reconnects and resends everything in flight
            # (these packets included: they were registered in flight before this write).
            log.info("fleet link %s: write failed (%s); will resend after reconnect", self.client_id, exc)

    def tick(self) -> None:
        """Write what is buffered; keep the connection alive (call often, e.g. every 10 ms)."""
        self._send_buffer()
        if time.monotonic() - self._last_write > self.keepalive / 2 and self._sock is not None:
            try:
                with self._write_lock:
                    self._sock.sendall(b"\xc0\x00")  # PINGREQ
                self._last_write = time.monotonic()
            except OSError:
                pass

    @property
    def inflight(self) -> int:
        with self._cond:
            return len(self._inflight)

    def flush(self, timeout: float = 30.0) -> bool:
        self._send_buffer()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def close(self, *, flush_timeout: float = 30.0) -> bool:
        flushed = self.flush(flush_timeout)
        self._closing = True
        sock = self._sock
        if sock is not None:
            try:
                with self._write_lock:
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._reader is not None:
            self._reader.join(5)
        return flushed
