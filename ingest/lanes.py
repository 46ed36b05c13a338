"""Lanes: the ingest's messages split by device over its writer threads, and acknowledged in arrival order.

A lane is one writer's own inbox. Every message of a device goes to the same lane (its native device id decides),
so one writer sees that device's messages in arrival order and no two writers of a process ever lock the same
device's rule state: their batches run side by side instead of each waiting for the previous one's commit on the
devices they share. Everything that names no native device (bridge traffic, unknown topics) takes lane 0, in its
arrival order, as all messages did before lanes.

MQTT 5 section 4.6 wants PUBACKs in the order the PUBLISHes arrived, so a lane's committed batch is acknowledged
only as far as every earlier message of every lane is committed too (AckOrder): a slow lane holds the other lanes'
acknowledgements back, never their work. What waits for acknowledgement is bounded by Receive Maximum.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable

from ingest.consumer import Inbox
from ingest.decode import Message, split_native


class AckOrder:
    """Numbers messages as they arrive and releases committed ones for acknowledgement in that order."""

    def __init__(self, ack: Callable[[list[Message]], object]) -> None:
        self._ack = ack
        self._lock = threading.Lock()
        self._arrived = 0  # the next arrival number
        self._released = 0  # every message numbered below this is acknowledged
        self._committed: dict[int, Message] = {}  # committed, waiting for an earlier message

    def number(self, messages: list[Message]) -> None:
        """Give messages their arrival numbers (the network thread, in the order they were read)."""
        with self._lock:
            n = self._arrived
            for m in messages:
                m.arrival = n
                n += 1
            self._arrived = n

    def committed(self, messages: list[Message]) -> int:
        """These messages are in the database: acknowledge every committed message that no uncommitted one
        precedes, in arrival order (under the lock, so acknowledgements leave in that order). Returns how many."""
        with self._lock:
            held = self._committed
            for m in messages:
                held[m.arrival] = m
            ready: list[Message] = []
            n = self._released
            while n in held:
                ready.append(held.pop(n))
                n += 1
            self._released = n
            if ready:
                self._ack(ready)
            return len(ready)

    @property
    def released(self) -> int:
        """How many messages have been released for acknowledgement so far."""
        return self._released

    def waiting(self) -> int:
        """Committed messages held back by an earlier one that is not committed yet."""
        with self._lock:
            return len(self._committed)


class Lanes:
    """One bounded Inbox per writer; the network thread's put_many splits each read over them by device.

    The bounds (messages and payload bytes) are shared out evenly, so all lanes together hold what one inbox did,
    to within a network read per lane."""

    def __init__(
        self, count: int, *, prefix: str, maxsize: int, max_bytes: int | None, order: AckOrder, min_size: int = 1
    ) -> None:
        self.count = count
        self._prefix = prefix
        self._native = prefix + "/"
        share = max(min_size, -(-maxsize // count))
        byte_share = None if max_bytes is None else max(1, -(-max_bytes // count))
        self.inboxes = [Inbox(maxsize=share, max_bytes=byte_share) for _ in range(count)]
        self.order = order

    def lane_of(self, topic: str) -> int:
        """The lane of a topic: by its device id under the native prefix (crc32: the same in every process and
        run), else lane 0."""
        if self.count == 1 or not topic.startswith(self._native):
            return 0
        device, _ = split_native(topic, self._prefix)
        return zlib.crc32(device.encode()) % self.count

    def put_many(self, messages: list[Message]) -> None:
        """Number a network read's messages and hand each to its lane (blocking while that lane is full)."""
        self.order.number(messages)
        if self.count == 1:
            self.inboxes[0].put_many(messages)
            return
        split: list[list[Message]] = [[] for _ in self.inboxes]
        for m in messages:
            split[self.lane_of(m.topic)].append(m)
        for inbox, part in zip(self.inboxes, split, strict=True):
            if part:
                inbox.put_many(part)

    def qsize(self) -> int:
        return sum(inbox.qsize() for inbox in self.inboxes)

    def empty(self) -> bool:
        return all(inbox.empty() for inbox in self.inboxes)

    def held_bytes(self) -> int:
        """Payload bytes waiting in the lanes."""
        return sum(len(m.payload) for inbox in self.inboxes for m in inbox.items())
