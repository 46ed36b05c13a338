"""Issue 8: the benchmark harness runs end to end at the smallest sizes, so it cannot rot.

No timing is asserted (that is what `gridwatch bench` reports); this checks that every stage ran on
real services and produced consistent figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from bench import cgroup as bench_cgroup
from bench import cpu as bench_cpu
from bench.rawpub import RawPublisher
from bench.run import Sizes, evaluate_targets, find_endpoint, percentile, run
from tests.support import wait_for


def test_bench_runs_every_stage_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    sizes = Sizes.tiny()
    results = run(sizes, data_dir=tmp_path / "work", out=out, quiet=True)
    f = results.figures
    assert json.loads(out.read_text())["figures"]["ingest_one"]["messages"] == sizes.messages

    w = f["workloads"]
    for name in ("mixed", "storm"):
        one = w[name]["one"]
        assert w[name]["raw"]["messages"] == w[name]["messages"], "the bare subscriber gets every message"
        assert one["stored"] == w[name]["readings"] and one["duplicate_open_alarms"] == 0
        assert one["transitions"] > 0 and one["notifications_queued"] == one["transitions"]
        assert one["statements_us_per_reading"], "the server's statement profile"
    assert w["storm"]["one"]["transitions_per_reading"] >= 0.15, "a storm flips at least 15 % of readings"
    assert w["mixed"]["two"]["processes"] == 2 and w["mixed"]["two"]["stored"] == w["mixed"]["readings"]
    assert w["storm_latency"]["probes"] > 0
    assert set(w["storm_latency"]["stages_ms"]) == {"to_ingest_batch", "batch_to_routing", "routing_to_webhook"}
    assert {"mixed_one_vs_raw", "storm_vs_mixed", "mixed_two_vs_one", "storm_latency_p99_ms"} <= set(f["targets"])

    assert f["raw_subscriber"]["messages"] == sizes.messages
    assert f["raw_copy"]["rows"] == sizes.messages
    for label in ("ingest_one", "ingest_two"):
        assert f[label]["stored"] == sizes.messages, f"{label} must store every message exactly once"
        assert f[label]["duplicate_open_alarms"] == 0
        assert f[label]["open_alarms"] > 0, "the backlog carries gas alarms; the rules must have raised them"
        assert f[label]["rate"] > 0
    assert f["ingest_two"]["processes"] == 2

    if bench_cgroup.unavailable_reason() is None:  # root with a cgroup cpu controller, as on the project's machine
        capped = f["ingest_capped"]
        for label in ("one", "two"):
            assert capped[label]["stored"] == sizes.messages, f"capped {label} must store every message exactly once"
            assert capped[label]["duplicate_open_alarms"] == 0
        assert capped["two"]["processes"] == 2
        assert capped["vs_one"] == round(capped["two"]["rate"] / capped["one"]["rate"], 3)
        assert "ingest_two_vs_one_capped" in f["targets"]
    else:
        assert "ingest_capped" not in f
        assert any("capped scale-out drains left out" in n for n in results.notes)

    lat = f["latency"]
    assert lat["probes"] > 0
    assert lat["notified"] == lat["probes"], "every probe alarm must reach the webhook"
    assert 0 < lat["p50_ms"] <= lat["p99_ms"]

    fleet = f["fleet"]
    assert fleet["devices"] == sizes.fleet_devices
    assert fleet["sent"] > 0 and fleet["errors"] == 0 and fleet["acked"] == fleet["sent"] + fleet["statuses"]

    assert f["scale"]["generated"] is True
    assert f["scale"]["ingest_peak_rss_mb"] > 0
    board = f["api"]["worker_board"]
    assert board["status"] == 200 and board["items"] > 0, "the busy worker's board lists open alarms"
    for name in ("merchant_score", "device_day_readings"):
        assert f["api"][name].get("status") == 200, (
            f"{name} is measured (it went unmeasured once the API's description became admin-only)"
        )
    assert set(f["targets"]) >= {
        "ingest_one_vs_raw",
        "ingest_two_vs_one",
        "latency_p99_ms",
        "ingest_rss_mb",
        "fleet_rate_ratio",
    }


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(
    ("figures", "key", "met"),
    [
        ({"ingest_one": {"vs_raw": 0.71}}, "ingest_one_vs_raw", True),
        ({"ingest_one": {"vs_raw": 0.69}}, "ingest_one_vs_raw", False),
        ({"ingest_capped": {"vs_one": 1.79}}, "ingest_two_vs_one_capped", False),
        ({"ingest_capped": {"vs_one": 1.8}}, "ingest_two_vs_one_capped", True),
        ({"latency": {"p99_ms": 500.0}}, "latency_p99_ms", True),
        ({"latency": {"p99_ms": 501.0}}, "latency_p99_ms", False),
        ({}, "ingest_rss_mb", None),
        ({"api": {"board": {"p95_ms": 3.0, "status": 500}}}, "api_p95_ms_board", False),
    ],
)
def test_targets_are_judged_in_the_right_direction(figures: dict, key: str, met: bool | None) -> None:
    assert evaluate_targets(figures)[key]["met"] is met


PATHS = {
    "/api/v1/scores": {"get": {}},
    "/api/v1/merchants/{merchant_id}/score": {"get": {}},
    "/api/v1/devices/{device_id}/readings": {
        "get": {"parameters": [{"in": "query", "name": "start"}, {"in": "query", "name": "end"}]}
    },
}


def test_endpoints_are_found_by_their_path_parameters() -> None:
    assert find_endpoint(PATHS, "score", {"merchant": "m1"}, "merchant") == (
        "/api/v1/merchants/m1/score",
        {},
        "merchant",
    )
    assert find_endpoint(PATHS, "score", {"device": "d1"}, "admin") is None
    assert find_endpoint(PATHS, "trend", {"merchant": "m1"}, "merchant") is None


def test_raw_publisher_delivers_every_message_in_order_with_qos_1(services: Any) -> None:
    """The latency stage's load generator writes PUBLISH packets itself: the real broker must take them all,
    acknowledge them and deliver them unchanged, in order, at QoS 1."""
    got: list[tuple[str, bytes, int]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rawpub-sub-{time.time_ns()}", protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload), m.qos))
    sub.connect("127.0.0.1", services.mqtt_port)
    sub.subscribe("rawpub/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    messages = [(f"rawpub/d{i % 7}", b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 300))) for i in range(5000)]
    pub = RawPublisher("127.0.0.1", services.mqtt_port, client_id=f"rawpub-{time.time_ns()}")
    sent = 0
    while sent < len(messages):
        room = min(pub.room(), 250)
        if room > 0:
            pub.publish_many(messages[sent : sent + room])
            sent += room
            time.sleep(0.01)  # paced: the stock subscriber is the slow side here
        else:
            pub.wait_for_acks(0.01)
    pub.close()
    assert pub.acked == len(messages) and pub.in_flight == 0
    wait_for(lambda: len(got) >= len(messages), timeout=20, what="every message delivered")
    sub.loop_stop()
    sub.disconnect()
    assert [(t, p) for t, p, _ in got] == messages
    assert {q for _, _, q in got} == {1}


SPIN_FOR_A_SECOND = """
import sys, time
sys.stdin.readline()  # wait until the test has put this process under the cap
end = time.time() + 1.0
while time.time() < end:
    pass
sys.stdin.readline()
"""


@pytest.mark.skipif(bench_cgroup.unavailable_reason() is not None, reason="needs a writable cgroup cpu controller")
def test_cpu_cap_holds_a_busy_process_to_its_share() -> None:
    """The capped scale-out figure is only as good as the cap: a process spinning for a second, held to 0.2 of a
    core, gets about 0.2 s of CPU (uncapped it takes the whole second) and is throttled for the rest."""
    cap = bench_cgroup.CpuCap(f"gridwatch-test-{os.getpid()}", 0.2)
    proc = subprocess.Popen([sys.executable, "-c", SPIN_FOR_A_SECOND], stdin=subprocess.PIPE)
    try:
        cap.add(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        time.sleep(1.0)
        used = bench_cpu.cpu_seconds(proc.pid)
        assert used < 0.4, f"held to 0.2 of a core for about 1 s, it used {used:.2f} s of CPU"
        assert cap.throttled_s() > 0.3
    finally:
        proc.kill()
        proc.wait()
        cap.close()
    assert not cap.path.exists()
