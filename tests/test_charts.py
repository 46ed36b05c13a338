"""Issue 22: charts a person would rather look at than read: a device's readings with its alarm thresholds and
alarm spans marked, a merchant's score trend with its ledger entries, the admin's alarms per day."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.chart import svg_bars, svg_chart
from core.settings import Settings
from rules import service as rules_service
from score import service as score_service
from tests.api_helpers import ApiEnv, api_env, raise_alarm

T0 = datetime(2026, 11, 5, 8, 0, tzinfo=UTC)


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def login(client: TestClient, token: str) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = client.post("/login", data={"token": token, "csrf": csrf.group(1), "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text


def y_of(svg: str, cls: str) -> float:
    m = re.search(rf'<line class="{cls}"[^>]* y1="([\d.]+)"', svg)
    assert m, svg
    return float(m.group(1))


def test_marks_on_a_chart() -> None:
    points = [(T0 + timedelta(minutes=i), None, float(i), None) for i in range(10)]
    svg = str(
        svg_chart(
            points,
            title="gas",
            unit="%LEL",
            thresholds=[(25.0, "GAS-02 <leak>")],
            spans=[(T0 + timedelta(minutes=3), T0 + timedelta(minutes=5), "gas leak", "sev-critical")],
            events=[(T0 + timedelta(minutes=4), "-10 M-D02 corridor"), (T0 - timedelta(days=1), "before the chart")],
        )
    )
    # the threshold is drawn in view although every reading is below it (top of the plot, y = 14), and escaped
    assert 14 <= y_of(svg, "threshold") <= 20 and "GAS-02 &lt;leak&gt;" in svg and "<leak>" not in svg
    span = re.search(r'<rect class="span sev-critical" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    assert span and 48 < float(span.group(1)) < 640 - 12 and float(span.group(2)) > 2
    assert svg.count('<g class="event">') == 1, "an event outside the chart's time is left out"
    # an open span runs to the chart's right edge
    open_span = str(svg_chart(points, title="g", spans=[(T0 + timedelta(minutes=8), None, "x", "sev-major")]))
    m = re.search(r'class="span sev-major" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', open_span)
    assert m and float(m.group(1)) + float(m.group(2)) == pytest.approx(640 - 12, abs=0.2)


def test_bars() -> None:
    svg = str(svg_bars([("11-01", 0), ("11-02", 3), ("11-03", 1)], title="per day"))
    heights = [float(h) for h in re.findall(r'class="bar"[^>]*height="([\d.]+)"', svg)]
    assert heights[0] == 0 and heights[1] > heights[2] > 0 and heights[1] == pytest.approx(3 * heights[2], abs=0.3)
    assert "<title>11-02: 3</title>" in svg
    assert "<svg" in str(svg_bars([], title="nothing"))


def test_the_device_chart_marks_thresholds_and_alarm_spans(env: ApiEnv) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with env.conn() as conn, conn.transaction():
        for i in range(60):
            conn.execute(
                "INSERT INTO reading (device_id, ts, seq, received_at, gas_lel) VALUES ('gas-1', %s, %s, %s, %s)",
                (now - timedelta(minutes=60 - i), i, now, 30.0 if 20 <= i < 30 else 2.0),
            )
        alarm_id = raise_alarm(conn, "gas-1", at=now - timedelta(minutes=40))
        rules_service.acknowledge(conn, alarm_id=alarm_id, actor="w1", now=now - timedelta(minutes=35))
    client = TestClient(env.app, base_url="https://testserver")
    login(client, env.tokens["w1"])
    page = client.get("/devices/gas-1?lang=en&hours=2").text
    chart = page[page.index('<figure id="chart">') :]
    # the shipped gas rules raise at 10, 25 and 50 %LEL: each a dashed line, named
    labels = re.findall(r'<text class="threshold-label"[^>]*>([^<]+)</text>', chart)
    assert len(labels) >= 3 and any("gas leak" in label for label in labels), labels
    assert re.search(r'class="span sev-critical"[^>]*><title>gas leak</title>', chart)
    assert "燃气泄漏" in client.get("/devices/gas-1?lang=zh-CN&hours=2").text


def test_the_score_trend_marks_ledger_entries(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        score_service.record_finding(conn, site_id="s1", kind="blocked_exit", actor="w1")
        for i, points in enumerate((-10, 5)):
            conn.execute(
                "INSERT INTO score_entry (merchant_id, at, points, code, reason, actor, dedupe_key)"
                " VALUES ('m1', %s, %s, 'ADJ', 'checked on site', 'admin', %s)",
                (datetime.now(UTC) - timedelta(days=3 - i), points, f"t{i}"),
            )
        score_service.recompute_all(conn, refresh=True)
    client = TestClient(env.app, base_url="https://testserver")
    login(client, env.tokens["m1"])
    page = client.get("/score?lang=en").text
    events = re.findall(r'<g class="event">.*?<title>([^<]+)</title></g>', page)
    assert any(e.startswith("-10 ADJ") for e in events) and any(e.startswith("+5 ADJ") for e in events), events


def test_the_admin_sees_alarms_per_day(env: ApiEnv) -> None:
    now = datetime.now(UTC)
    with env.conn() as conn, conn.transaction():
        raise_alarm(conn, "gas-1", at=now - timedelta(days=2))
        raise_alarm(conn, "gas-2", at=now - timedelta(days=2, minutes=5))
        raise_alarm(conn, "smoke-1", "smoke", at=now - timedelta(days=40))  # before the 30 days
    client = TestClient(env.app, base_url="https://testserver")
    login(client, env.tokens["admin"])
    page = client.get("/admin?lang=en").text
    figure = page[page.index('<figure id="alarms-per-day">') :]
    bars = [int(n) for n in re.findall(r'class="bar" data-label="[^"]+" data-n="(\d+)"', figure)]
    assert len(bars) == 30 and sum(bars) == 2  # the two of two days ago (one bar, or two across midnight)
    assert "Alarms per day" in page
