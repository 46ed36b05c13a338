"""The latency stage's load generator: a QoS-1 MQTT v5 publisher that writes packets straight to its socket.

paho's publish costs ~50 µs of CPU a message, more than the ingest now spends on one, so a paho load generator
could not reach half of the ingest's measured rate on these cores (it reached 6,300 of 12,700 msg/s). This one
builds each PUBLISH as bytes, sends them in one write per round, stays within the broker's Receive Maximum and
only counts the PUBACKs (MQTT 5.0 sections 3.1 CONNECT, 3.2 CONNACK, 3.3 PUBLISH, 3.4 PUBACK).
"""

from __future__ import annotations

import select
import socket
import struct
import time

CONNECT, CONNACK, PUBLISH_QOS1, PUBACK, DISCONNECT = 0x10, 0x20, 0x32, 0x40, 0xE0
RECEIVE_MAXIMUM = 0x21  # CONNACK property (3.2.2.3.3)
# Sizes of the other CONNACK properties, to step over them: 1-byte, 2-byte and 4-byte integers; the rest are
# strings or binary data (2-byte length), and user properties are a pair of strings.
_FIXED = {
    0x01: 1,
    0x17: 1,
    0x19: 1,
    0x24: 1,
    0x25: 1,
    0x28: 1,
    0x29: 1,
    0x2A: 1,
    0x13: 2,
    0x22: 2,
    0x23: 2,
    0x11: 4,
    0x27: 4,
}
USER_PROPERTY = 0x26
MAX_IN_FLIGHT = 2000  # even when the broker allows more (Mosquitto with max_inflight_messages 0: 65,535)


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (1.5.5)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """The variable byte integer at `pos`: (value, position after it), or None when `buf` ends first."""
    value, shift = 0, 0
    while pos < len(buf):
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def split_packets(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete packets at the front of `buf` as (first byte, body), and the incomplete rest."""
    packets: list[tuple[int, bytes]] = []
    pos = 0
    while (length := read_varint(buf, pos + 1)) is not None and length[1] + length[0] <= len(buf):
        size, body = length
        packets.append((buf[pos], buf[body : body + size]))
        pos = body + size
    return packets, buf[pos:]


def receive_maximum(connack: bytes) -> int:
    """The broker's Receive Maximum from a v5 CONNACK body (65,535 when it sends none)."""
    found = read_varint(connack, 2)  # the properties' length, after the acknowledge flags and the reason code
    if found is None:
        return 65535
    length, pos = found
    end = pos + length
    while pos < end:
        prop = connack[pos]
        pos += 1
        if prop == RECEIVE_MAXIMUM:
            return int(struct.unpack_from("!H", connack, pos)[0])
        if prop in _FIXED:
            pos += _FIXED[prop]
            continue
        pos += 2 + struct.unpack_from("!H", connack, pos)[0]
        if prop == USER_PROPERTY:
            pos += 2 + struct.unpack_from("!H", connack, pos)[0]
    return 65535


class RawPublisher:
    """Publishes with QoS 1 on one connection; `room()` says how many more the broker takes now."""

    def __init__(self, host: str, port: int, *, client_id: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = client_id.encode()
        # protocol name, version 5, clean start, keepalive 60 s, no properties; then the client id
        body = struct.pack("!H4sBBHB", 4, b"MQTT", 5, 0x02, 60, 0) + struct.pack("!H", len(name)) + name
        self.sock.sendall(bytes([CONNECT]) + varint(len(body)) + body)
        self._rx = b""
        deadline = time.monotonic() + timeout
        while True:
            packets, self._rx = split_packets(self._rx + self._recv(deadline))
            if packets:
                break
        header, connack = packets[0]
        if header != CONNACK or len(connack) < 2 or connack[1] != 0:
            code = connack[1] if header == CONNACK and len(connack) > 1 else "no CONNACK"
            raise ConnectionError(f"broker refused the load publisher ({code})")
        self.limit = min(MAX_IN_FLIGHT, receive_maximum(connack))
        self.sock.setblocking(False)
        self.in_flight = 0
        self.acked = 0
        self._mid = 0

    def _recv(self, deadline: float) -> bytes:
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the broker closed the load publisher's connection")
        return chunk

    def _take_acks(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the broker closed the load publisher's connection")
                self._rx += chunk
        except BlockingIOError:
            pass
        packets, self._rx = split_packets(self._rx)
        acks = sum(1 for header, _ in packets if header & 0xF0 == PUBACK)
        self.acked += acks
        self.in_flight -= acks

    def room(self) -> int:
        """How many more messages the broker takes before a PUBACK comes back."""
        self._take_acks()
        return self.limit - self.in_flight

    def wait_for_acks(self, timeout: float) -> None:
        select.select([self.sock], [], [], timeout)

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Send these (at most room()) as QoS-1 PUBLISHes in one write."""
        out = bytearray()
        for topic, payload in messages:
            self._mid = self._mid % 65535 + 1
            name = topic.encode()
            out += bytes([PUBLISH_QOS1]) + varint(2 + len(name) + 3 + len(payload))
            out += struct.pack("!H", len(name)) + name + struct.pack("!HB", self._mid, 0) + payload
        self.sock.setblocking(True)
        try:
            self.sock.sendall(out)
        finally:
            self.sock.setblocking(False)
        self.in_flight += len(messages)

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the outstanding PUBACKs, then disconnect."""
        deadline = time.monotonic() + timeout
        while self.in_flight > 0 and time.monotonic() < deadline:
            self.wait_for_acks(0.05)
            self._take_acks()
        try:
            self.sock.setblocking(True)
            self.sock.sendall(bytes([DISCONNECT, 0]))
        finally:
            self.sock.close()
