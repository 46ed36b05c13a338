"""Issue 8: the benchmark harness runs end to end at the smallest sizes, so it cannot rot.

No timing is asserted (that is what `gridwatch bench` reports); this checks that every stage ran on
real services and produced consistent figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import Sizes, evaluate_targets, find_endpoint, percentile, run


def test_bench_runs_every_stage_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    sizes = Sizes.tiny()
    results = run(sizes, data_dir=tmp_path / "work", out=out, quiet=True)
    f = results.figures
    assert json.loads(out.read_text())["figures"]["ingest_one"]["messages"] == sizes.messages

    assert f["raw_subscriber"]["messages"] == sizes.messages
    assert f["raw_copy"]["rows"] == sizes.messages
    for label in ("ingest_one", "ingest_two"):
        assert f[label]["stored"] == sizes.messages, f"{label} must store every message exactly once"
        assert f[label]["duplicate_open_alarms"] == 0
        assert f[label]["open_alarms"] > 0, "the backlog carries gas alarms; the rules must have raised them"
        assert f[label]["rate"] > 0
    assert f["ingest_two"]["processes"] == 2

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
    assert set(f["targets"]) >= {"ingest_one_vs_raw", "ingest_two_vs_one", "latency_p99_ms", "ingest_rss_mb",
                                  "fleet_rate_ratio"}


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
