"""Issue 21, requirement 6: `gridwatch simulate --field-day` plays the people of a field day against a live API on
a real port (real PostgreSQL, the field part delivering to a real receiver): a patrol round's failed item becomes a
work order, a resident's QR report reaches a worker and is followed to its outcome, a drill is dispatched and
acknowledged. And the day refuses to start, with a message and a non-zero exit, when it cannot."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from api import auth
from app.services import Running, start_services
from core.embedded import free_port
from core.settings import Settings
from field.worker import FieldWorker
from notify.delivery import Sender
from simulators.cli import list_scenarios, run_field_day
from simulators.fieldday import FieldDay, FieldDayError
from tests.conftest import ROOT
from tests.support import Receiver, load_registry, wait_for


@dataclass
class Stack:
    settings: Settings
    base: str
    admin: str
    worker: str


def _token(settings: Settings, role: str, **kw: Any) -> str:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        return auth.create_token(conn, secret_key=settings.secret_key.get_secret_value(), role=role, label="test", **kw)  # type: ignore[arg-type]


@pytest.fixture
def stack(loaded: Settings) -> Iterator[Stack]:
    """The small registry (shop s1 in mg1 covered by w1, building s2 in mg2 covered by w2), the API on a real
    port, and the field part delivering notices through apprise to the test's receiver."""
    port = free_port()
    settings = loaded.model_copy(update={"api_port": port, "api_host": "127.0.0.1"})
    running: Running = start_services(settings, ("api",))
    sender = Sender(timeout_s=5, deadline_s=10)

    def send(urls: list[str], title: str, body: str, who: str) -> list[tuple[bool, str]]:
        return [(r.ok, r.detail) for r in sender.send(urls, title, body, recipient=who)]

    field = FieldWorker(settings.dsn, send=send, tz=settings.timezone, interval_s=0.2)
    field.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: running.api_server.started, what="the API listening")
    try:
        yield Stack(settings, base, _token(settings, "admin"), _token(settings, "worker", worker_id="w1"))
    finally:
        field.stop()
        running.stop()
        sender.close()


def _simulate(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "simulate", *args],
        cwd=ROOT,
        env={**env, **(env_extra or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one(conn: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = conn.execute(sql, args).fetchone()
    assert row is not None, sql
    return row


def test_the_field_day_runs_against_a_live_api(stack: Stack, receiver: Receiver) -> None:
    done = _simulate("--field-day", "--yes", "--api", stack.base, "--token", stack.admin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[simulate] field day against" in done.stderr and "walks patrol round" in done.stderr
    assert "3 of 3 stories done" in done.stdout
    assert "FAIL" not in done.stdout

    with psycopg.connect(stack.settings.dsn) as conn:
        # The round's failed check-list item became the work order, linked to its stop.
        (order_id, kind, source, stop_answers, round_by) = _one(
            conn,
            """SELECT w.id, w.kind, w.source, s.answers, r.created_by FROM work_order w
               JOIN patrol_stop s ON s.id = w.patrol_stop_id JOIN patrol_round r ON r.id = s.round_id
               WHERE w.site_id = 's1'""",
        )
        assert source == "patrol" and kind == "ebike_charging_indoors"
        assert stop_answers[kind] == "fail" and [v for v in stop_answers.values() if v == "fail"] == ["fail"]
        assert round_by.endswith("w1"), "the worker's phone walked the round"
        assert f"{stack.base}/work-orders/{order_id}" in done.stdout
        # The resident's report exists, was told to the building's worker (w2) and closed with an outcome.
        (report_id, status, outcome) = _one(
            conn, "SELECT id, status, outcome FROM resident_report WHERE site_id = 's2'"
        )
        assert status == "closed" and "cleared" in outcome
        (notice_status,) = _one(
            conn, "SELECT status FROM field_notice WHERE resident_report_id = %s AND worker_id = 'w2'", report_id
        )
        # A drill went to the shop's micro-grid and w1 acknowledged it.
        (drill_id, mg) = _one(conn, "SELECT id, micro_grid_id FROM drill")
        assert mg == "mg1"
        (acked, arrived) = _one(
            conn,
            "SELECT acknowledged_at, arrived_at FROM drill_response WHERE drill_id = %s AND worker_id = 'w1'",
            drill_id,
        )
        assert acked is not None and arrived is not None
        # The worker token made for the day is revoked after it.
        assert _one(conn, "SELECT count(*), count(revoked_at) FROM api_token WHERE label = 'field-day simulator'") == (
            1,
            1,
        ), "one token, for w1, who walked the round and answered the drill"
    assert notice_status in ("pending", "sent")
    wait_for(lambda: receiver.for_path("w2"), what="the resident report delivered to w2")
    assert any(f"#{report_id}" in m["title"] for m in receiver.for_path("w2"))
    wait_for(
        lambda: any("演练" in m["title"] + m["message"] for m in receiver.for_path("w1")),
        what="the drill delivered to w1",
    )
    assert f"resident report {report_id} from" in done.stdout and "/r/receipt/" in done.stdout
    assert f"drill {drill_id} (网格赶考)" in done.stdout and "acknowledged in" in done.stdout


def test_a_given_worker_token_walks_the_round(stack: Stack) -> None:
    err, out = io.StringIO(), io.StringIO()
    assert run_field_day(stack.base, stack.admin, worker_token=stack.worker, err=err, out=out) == 0, out.getvalue()
    with psycopg.connect(stack.settings.dsn) as conn:
        assert _one(conn, "SELECT count(*) FROM api_token WHERE label = 'field-day simulator'") == (0,)
        (by,) = _one(conn, "SELECT created_by FROM patrol_round WHERE kind = 'adhoc'")
    assert by.endswith("w1")


def test_a_refused_step_fails_the_day_and_the_other_stories_still_run(stack: Stack) -> None:
    """A resident may send 3 reports in 10 minutes: the fourth day's report is refused (429), so that day exits 1,
    with its round and drill still played."""
    for _ in range(3):
        assert run_field_day(stack.base, stack.admin, err=io.StringIO(), out=io.StringIO()) == 0
    err, out = io.StringIO(), io.StringIO()
    assert run_field_day(stack.base, stack.admin, err=err, out=out) == 1
    lines = out.getvalue().splitlines()
    assert "2 of 3 stories done" in lines[0]
    assert lines[1].startswith("  ok   patrol round") and lines[3].startswith("  ok   drill")
    assert lines[2].startswith("  FAIL the resident limits refused the report (429: ") and "retry after" in lines[2]
    assert "FAILED the resident limits" in err.getvalue()
    with psycopg.connect(stack.settings.dsn) as conn:
        assert _one(conn, "SELECT count(*) FROM resident_report") == (3,)
        assert _one(conn, "SELECT count(*) FROM drill") == (4,)
        assert _one(
            conn, "SELECT count(*) FROM api_token WHERE label = 'field-day simulator' AND revoked_at IS NULL"
        ) == (0,)


def test_a_bad_token_is_refused_with_a_message(stack: Stack) -> None:
    done = _simulate("--field-day", "--yes", "--api", stack.base, "--token", "gw_not-a-real-token")
    assert done.returncode != 0
    assert "refused the admin token (401" in done.stderr, done.stderr
    with psycopg.connect(stack.settings.dsn) as conn:
        assert _one(conn, "SELECT count(*) FROM patrol_round WHERE kind = 'adhoc'") == (0,)


def test_a_worker_token_is_not_an_admin_token(stack: Stack) -> None:
    with pytest.raises(FieldDayError, match="is a worker token: the field day needs an admin token"):
        FieldDay(stack.base, stack.worker).run()


def test_an_unreachable_api_is_an_error() -> None:
    done = _simulate("--field-day", "--yes", "--api", f"http://127.0.0.1:{free_port()}", "--token", "gw_x")
    assert done.returncode != 0
    assert "cannot reach the gridwatch API at http://127.0.0.1:" in done.stderr, done.stderr


def test_something_else_at_the_address_is_an_error() -> None:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>a router's login page</html>")

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(FieldDayError, match="does not answer as a gridwatch API"):
            FieldDay(f"http://127.0.0.1:{server.server_address[1]}", "gw_x").run()
    finally:
        server.shutdown()
        server.server_close()


def test_without_yes_the_day_is_not_played_on_a_deployment(stack: Stack) -> None:
    """It deducts points, opens a work order and sends a drill for real: not without the operator saying so."""
    done = _simulate("--field-day", "--api", stack.base, "--token", stack.admin)
    assert done.returncode != 0 and "confirm with --yes" in done.stderr and "costs its merchant points" in done.stderr
    with psycopg.connect(stack.settings.dsn) as conn:
        assert _one(conn, "SELECT count(*) FROM work_order") == (0,)
        assert _one(conn, "SELECT count(*) FROM drill") == (0,)
        assert _one(conn, "SELECT count(*) FROM api_token WHERE label = 'field-day simulator'") == (0,)


def test_no_token_is_an_error() -> None:
    done = _simulate("--field-day", "--yes", "--api", "http://127.0.0.1:9")
    assert done.returncode != 0 and "needs an admin token" in done.stderr


def test_the_worker_on_duty_walks_the_round_and_answers_the_drill(settings: Settings) -> None:
    """Of a micro-grid's two workers the one on duty now (by roster, in the community's time zone) is cast, so the
    drill, routed to whoever is on duty, reaches the worker the simulator plays."""
    elsewhen = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[
        (datetime.now(ZoneInfo("Asia/Shanghai")).weekday() + 3) % 7
    ]
    to = '"json://127.0.0.1:9/"'  # workers without a channel are never dispatched a drill
    load_registry(
        settings,
        f"""\
community: {{id: c1, name: C, timezone: Asia/Shanghai}}
grids: [{{id: g1, name: G, micro_grids: [{{id: mg1, name: M}}]}}]
workers:
  - {{id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], roster: "{elsewhen} 09:00-10:00", notify: [{to}]}}
  - {{id: w9, name: Li, role: micro_grid_worker, micro_grids: [mg1], notify: [{to}]}}
merchants: [{{id: m1, name: Shop}}]
sites:
  - {{id: s1, kind: storage, micro_grid: mg1, merchant: m1}}
  - {{id: b1, kind: building, micro_grid: mg1}}
""",
    )
    port = free_port()
    running = start_services(settings.model_copy(update={"api_port": port, "api_host": "127.0.0.1"}), ("api",))
    try:
        wait_for(lambda: running.api_server.started, what="the API listening")
        err, out = io.StringIO(), io.StringIO()
        assert run_field_day(f"http://127.0.0.1:{port}", _token(settings, "admin"), err=err, out=out) == 0, (
            out.getvalue() + err.getvalue()
        )
        assert "w9 walks patrol round" in err.getvalue()
        assert "by w9" in err.getvalue(), "the building is in the shop's micro-grid: its worker handles the report"
        with psycopg.connect(settings.dsn) as conn:
            assert conn.execute(
                "SELECT worker_id FROM drill_response WHERE acknowledged_at IS NOT NULL"
            ).fetchall() == [("w9",)]
            assert _one(conn, "SELECT count(*) FROM drill_response WHERE worker_id = 'w1'") == (0,)
    finally:
        running.stop()


LACKING = """\
community: {id: c1, name: C}
grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
workers: [{id: w1, name: W, role: micro_grid_worker, micro_grids: [mg1]}]
merchants: [{id: m1, name: Shop}]
sites: [%s]
"""


@pytest.mark.parametrize(
    ("sites", "missing"),
    [
        ("{id: b1, kind: building, micro_grid: mg1}", r"has no shop or storage site \(for the patrol round\): load"),
        (
            "{id: s1, kind: shop, micro_grid: mg1, merchant: m1}",
            r"has no building \(for the resident's QR code\): load",
        ),
        (
            "{id: x1, kind: charging_shed, micro_grid: mg1}",
            r"has no shop or storage site \(for the patrol round\) and no building",
        ),
    ],
)
def test_a_registry_lacking_a_shop_or_a_building_says_so(settings: Settings, sites: str, missing: str) -> None:
    load_registry(settings, LACKING % sites)
    port = free_port()
    running = start_services(settings.model_copy(update={"api_port": port, "api_host": "127.0.0.1"}), ("api",))
    try:
        wait_for(lambda: running.api_server.started, what="the API listening")
        with pytest.raises(FieldDayError, match=missing):
            FieldDay(f"http://127.0.0.1:{port}", _token(settings, "admin")).run()
        with psycopg.connect(settings.dsn) as conn:
            assert _one(conn, "SELECT count(*) FROM patrol_round WHERE kind = 'adhoc'") == (0,)
    finally:
        running.stop()


def test_the_list_shows_the_field_day() -> None:
    out = io.StringIO()
    list_scenarios(out)
    assert "--field-day" in out.getvalue() and "resident" in out.getvalue()


def test_a_token_the_day_could_not_revoke_is_named_not_left_silently(stack: Stack) -> None:
    """Review 21: the day revoked the worker token it made without reading the answer, so a refused revocation (the
    admin token revoked or expired during the day, the API gone) left a live one-day worker token behind and said
    nothing, and an unreachable API at that point raised out of the day and lost its summary. Now the day fails with
    a step naming the token still live and how to revoke it."""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if "a one-day token" in line:  # the operator revokes the admin's token while the day runs
            with psycopg.connect(stack.settings.dsn) as conn, conn.transaction():
                conn.execute("UPDATE api_token SET revoked_at = now() WHERE role = 'admin' AND revoked_at IS NULL")

    result = FieldDay(stack.base, stack.admin, say=say).run()
    assert not result.ok
    with psycopg.connect(stack.settings.dsn) as conn:
        (token_id,) = _one(conn, "SELECT id FROM api_token WHERE label = 'field-day simulator' AND revoked_at IS NULL")
    (tokens,) = [s for s in result.steps if s.name == "tokens"]
    assert not tokens.ok and f"worker token {token_id}" in tokens.line and "still live" in tokens.line
    assert f"DELETE /api/v1/admin/tokens/{token_id}" in tokens.line
    assert any(line.startswith("FAILED worker token") for line in lines)


def test_a_registry_answer_of_another_shape_is_an_error_that_says_so() -> None:
    """Review 21: answers of an unknown shape were errors that say so in the stories only; while casting the day
    (the registry lists) they escaped as a KeyError, a traceback and exit 1 instead of the message and exit 2."""

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"role": "admin", "actor": "token:1"}' if self.path == "/api/v1/me" else b'[{"id": "s1"}]'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(FieldDayError, match=r"unexpected answer from the API .*GET /api/v1/admin/sites"):
            FieldDay(base, "gw_x").run()
        done = _simulate("--field-day", "--yes", "--api", base, "--token", "gw_x")
        assert done.returncode == 2 and "unexpected answer from the API" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    finally:
        server.shutdown()
        server.server_close()
