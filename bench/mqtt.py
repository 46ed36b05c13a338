"""MQTT side of the benchmark: persistent sessions, bounded publishers, the bare subscriber, a paced fleet."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.rawpub import RawPublisher

SESSION_EXPIRY_S = 3600


def _connect_props(receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def open_session(host: str, port: int, *, client_id: str, topics: Sequence[str]) -> None:
    """Create a persistent session subscribed with QoS 1, then leave: the broker queues for it from now on."""
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *_a: done.set()
    client.connect(host, port, clean_start=False, properties=_connect_props())
    client.loop_start()
    client.subscribe([(t, mqtt.SubscribeOptions(qos=1)) for t in topics])
    if not done.wait(10):
        raise RuntimeError(f"broker did not confirm the subscription of {client_id}")
    client.disconnect()
    client.loop_stop()


def close_session(host: str, port: int, *, client_id: str) -> None:
    """End a persistent session: a clean start with expiry 0 discards it, so the broker stops queueing every
    later message for a drained bench consumer (the latency stage must not pay for abandoned sessions)."""
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda *_a: done.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()


class Publisher:
    """QoS-1 publisher that bounds what it has in flight (paho loses messages past 65,535 outstanding)."""

    def __init__(self, host: str, port: int, *, client_id: str, max_in_flight: int = 1000) -> None:
        self.max_in_flight = max_in_flight
        self._cond = threading.Condition()
        self._in_flight = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(max_in_flight)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_publish(self, *_args: Any) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish, waiting while too many are unacknowledged."""
        with self._cond:
            while self._in_flight >= self.max_in_flight:
                self._cond.wait(1)
            self._in_flight += 1
        self.client.publish(topic, payload, qos=1)

    def flush(self, timeout: float = 60) -> None:
        """Wait for every PUBACK."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self._in_flight} publishes unacknowledged after {timeout} s")
                self._cond.wait(0.5)

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


def publish_all(host: str, port: int, messages: Sequence[tuple[str, bytes]], *, client_id: str) -> float:
    """Publish every message and wait for all PUBACKs; returns messages/s."""
    pub = RawPublisher(host, port, client_id=client_id)
    started = time.perf_counter()
    sent = 0
    while sent < len(messages):
        n = pub.room()
        if n > 0:
            pub.publish_many(list(messages[sent : sent + n]))
            sent += n
        else:
            pub.wait_for_acks(0.005)
    pub.close(timeout=120)
    if pub.in_flight:
        raise RuntimeError(f"{pub.in_flight} publishes unacknowledged after 120 s")
    return len(messages) / (time.perf_counter() - started)


@contextmanager
def broker_paused(pid: int) -> Any:
    """SIGSTOP the broker so several clients can connect; on exit SIGCONT releases them at the same instant.

    A connecting client's TCP handshake still completes (the kernel accepts it), its CONNECT waits in the
    socket buffer, so every consumer starts draining its backlog together when the broker resumes.
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def established_connections(port: int) -> int:
    """TCP connections established to 127.0.0.1:port (read from /proc/net/tcp, no extra tools)."""
    count = 0
    hex_port = f"{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if state == "01" and local.endswith(":" + hex_port):
                        count += 1
        except FileNotFoundError:
            continue
    return count


def wait_connections(port: int, expected: int, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Block until `expected` clients have a TCP connection to the broker."""
    deadline = time.monotonic() + timeout
    while established_connections(port) < expected:
        if not alive():
            raise RuntimeError("a consumer process exited before connecting to the broker")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {established_connections(port)} of {expected} consumers connected within {timeout:.0f} s"
            )
        time.sleep(0.05)


@dataclass
class DrainResult:
    messages: int
    seconds: float
    cpu_s: float = 0.0  # CPU time the consumer spent (all its threads): steadier than rates on a busy machine

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def _timed(
    broker_pid: int, start: Callable[[], None], done: threading.Event, timeout: float, shortfall: Callable[[], str]
) -> tuple[float, float]:
    """Start a consumer against the paused broker, release it, and time the drain until `done`: wall seconds
    and this process's CPU seconds."""
    with broker_paused(broker_pid):
        start()
        time.sleep(0.05)
        started = time.time()
        cpu = time.process_time()
    if not done.wait(timeout):
        raise RuntimeError(f"{shortfall()} messages in {timeout:.0f} s")
    return time.time() - started, time.process_time() - cpu


def raw_drain(
    host: str,
    port: int,
    *,
    client_id: str,
    expected: int,
    receive_maximum: int,
    broker_pid: int,
    timeout: float = 300,
) -> DrainResult:
    """The raw limit: a bare paho v5 subscriber counting a pre-queued backlog (auto-ack, nothing else)."""
    done = threading.Event()
    count = 0

    def on_message(_c: Any, _u: Any, _m: mqtt.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(receive_maximum)
    client.on_message = on_message

    def start() -> None:
        client.connect(host, port, clean_start=False, properties=_connect_props(receive_maximum))
        client.loop_start()

    elapsed, cpu = _timed(broker_pid, start, done, timeout, lambda: f"raw subscriber got {count} of {expected}")
    client.disconnect()
    client.loop_stop()
    return DrainResult(count, elapsed, cpu)


def receive_path_drain(
    host: str,
    port: int,
    *,
    client_id: str,
    expected: int,
    receive_maximum: int,
    batch: int,
    broker_pid: int,
    timeout: float = 300,
) -> DrainResult:
    """gridwatch's own receive path with nothing behind it: ingest.consumer's client and bounded inbox, a thread
    taking batches off the queue and acknowledging them (MqttConsumer.ack), no decoding and no database. What the
    ingest costs beyond this is its pipeline; this line shows how far the receive path itself is from the raw one."""
    from core.settings import MqttTarget
    from ingest.consumer import Inbox, MqttConsumer

    q = Inbox(maxsize=max(2000, receive_maximum))
    consumer = MqttConsumer(
        MqttTarget(f"mqtt://{host}:{port}"),
        client_id=client_id,
        topics=["gw/v1/+/telemetry"],
        out=q,
        receive_maximum=receive_maximum,
    )
    done = threading.Event()
    count = 0

    def take() -> None:
        nonlocal count
        while count < expected:
            got = q.take(batch, timeout=0.2)
            consumer.ack(got)
            count += len(got)
        done.set()

    taker = threading.Thread(target=take, daemon=True)

    def start() -> None:
        taker.start()
        consumer.start()

    elapsed, cpu = _timed(broker_pid, start, done, timeout, lambda: f"receive path got {count} of {expected}")
    consumer.stop()
    return DrainResult(count, elapsed, cpu)


class PacedFleet:
    """Publishes a message stream at a fixed rate from a thread (the background load), through RawPublisher."""

    def __init__(self, host: str, port: int, *, rate: float, make: Callable[[int], tuple[str, bytes]]) -> None:
        self.rate = rate
        self.make = make
        self.sent = 0
        self.behind_s = 0.0
        self._stop = threading.Event()
        self._pub = RawPublisher(host, port, client_id=f"bench-fleet-{os.getpid()}")
        self._thread = threading.Thread(target=self._run, name="bench-fleet", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            if due > self.sent:
                n = min(due - self.sent, self._pub.room())
                if n > 0:
                    self._pub.publish_many([self.make(i) for i in range(self.sent, self.sent + n)])
                    self.sent += n
                    continue
                self._pub.wait_for_acks(0.005)  # the broker's Receive Maximum is full
            else:
                time.sleep(0.002)
            self.behind_s = max(self.behind_s, time.monotonic() - started - self.sent / self.rate)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        """Stop; returns how many messages were sent."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._pub.close()
        return self.sent


def _fleet_main(
    host: str, port: int, rate: float, make: Callable[[int], tuple[str, bytes]], stop: Any, achieved: Any
) -> None:
    fleet = PacedFleet(host, port, rate=rate, make=make)
    started = time.monotonic()
    fleet.start()
    stop.wait()
    sent = fleet.stop()
    achieved.value = sent / max(1e-9, time.monotonic() - started)


class FleetProcess:
    """A PacedFleet in its own process, so the load's publishing does not compete for the GIL with the
    bench's clock and webhook (which would add to the latency being measured)."""

    def __init__(self, host: str, port: int, *, rate: float, make: Callable[[int], tuple[str, bytes]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._achieved = ctx.Value("d", 0.0)
        self._proc = ctx.Process(
            target=_fleet_main,
            args=(host, port, rate, make, self._stop, self._achieved),
            name="bench-fleet",
            daemon=True,
        )

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> float:
        """Stop; returns the rate actually achieved (messages/s)."""
        self._stop.set()
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
        return float(self._achieved.value)
