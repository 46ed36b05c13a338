"""`gridwatch demo`: the whole system on embedded defaults with simulated devices.

Composition root (like core/cli.py): starts a private PostgreSQL and Mosquitto unless GRIDWATCH_DATABASE_URL /
GRIDWATCH_MQTT_URL are given, loads the example community, runs ingest + rules + notify + api, redirects every
notification to a local receiver that prints it, and drives simulated devices through a short tour.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core import db
from core import repo as core_repo
from core.embedded import EmbeddedMosquitto, EmbeddedPostgres, free_port
from core.errors import ConfigError
from core.registry import read_registry
from core.settings import Settings

log = logging.getLogger(__name__)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_REGISTRIES = ("storage-area.yaml", "open-compound.yaml")


def say(line: str) -> None:
    """The demo talks to the person running it on stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class DemoReceiver:
    """Stands in for WeCom/DingTalk/e-mail: apprise posts JSON here and we print it."""

    def __init__(self) -> None:
        self.count = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    data: dict[str, Any] = json.loads(body)
                except ValueError:
                    data = {"title": "?", "message": body.decode(errors="replace")}
                outer.count += 1
                first = str(data.get("message", "")).splitlines()[:3]
                say(f"  📟 delivered {data.get('title', '')}\n       " + "\n       ".join(first))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/demo"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="demo-receiver").start()

    def close(self) -> None:
        self.server.shutdown()


def run_demo(*, data_dir: Path, duration: float | None, port: int) -> int:
    """Run until Ctrl-C (or duration); returns the exit code (non-zero if no alarm was delivered)."""
    data_dir = data_dir.resolve()
    pg = mosq = None
    receiver = DemoReceiver()
    database_url = os.environ.get("GRIDWATCH_DATABASE_URL")
    mqtt_url = os.environ.get("GRIDWATCH_MQTT_URL")
    running = None
    stop = threading.Event()
    try:
        if not database_url:
            say(f"• starting a private PostgreSQL in {data_dir / 'pg'}")
            pg = EmbeddedPostgres(data_dir / "pg")
            # Every demo starts from the same state: alarms left open by the last run would otherwise turn
            # the tour's new alarms into repeats (no new notification) and reminders.
            database_url = db.ensure_database(pg.start(), "gridwatch", fresh=True)
        if not mqtt_url:
            say(f"• starting a private Mosquitto in {data_dir / 'mosquitto'}")
            mosq = EmbeddedMosquitto(data_dir / "mosquitto", port=free_port())
            mqtt_url = mosq.start()
        api_port = port if port else free_port()
        settings = Settings(
            database_url=database_url,
            mqtt_url=mqtt_url,
            demo=True,
            api_port=api_port,
            notify_redirect_url=receiver.url,
            public_url=f"http://127.0.0.1:{api_port}",
            mqtt_client_id="gridwatch-demo-ingest",
        )
        with db.connect(settings.dsn) as conn:
            db.migrate(conn)
            for name in DEMO_REGISTRIES:
                path = EXAMPLES / name
                if not path.exists():
                    raise ConfigError(f"{path} not found: run the demo from a gridwatch checkout")
                registry = read_registry(path)
                with conn.transaction():
                    counts = core_repo.upsert_registry(conn, registry=registry)
                say(
                    f"• loaded {registry.community.name}: {counts['devices']} devices, {counts['workers']} workers, "
                    f"{counts['merchants']} merchants"
                )
        from api import auth
        from app.services import PARTS, start_services

        with db.connect(settings.dsn) as conn, conn.transaction():
            secret = settings.secret_key.get_secret_value()
            admin = auth.create_token(conn, secret_key=secret, role="admin", label="demo")
            worker = auth.create_token(conn, secret_key=secret, role="worker", worker_id="hhc-w1", label="demo")
            merchant = auth.create_token(conn, secret_key=secret, role="merchant", merchant_id="hhc-m01", label="demo")
        running = start_services(settings, PARTS)
        base = f"http://127.0.0.1:{api_port}"
        say(f"• gridwatch is running: API docs {base}/docs · health {base}/healthz · metrics {base}/metrics")
        say(f"  admin token:    {admin}\n  worker hhc-w1:  {worker}\n  merchant hhc-m01: {merchant}")
        say(f"  pages: {base}/login (paste a token) — worker board, merchant score, admin overview")
        say(f"  try: curl -H 'Authorization: Bearer {worker}' {base}/api/v1/alarms")
        say("• simulated devices start now; notifications are printed as they are delivered (Ctrl-C stops)")
        tour = _start_tour(settings, stop)
        _field_tour(base, admin)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        deadline = time.monotonic() + duration if duration else None
        while not stop.wait(0.5):
            if deadline is not None and time.monotonic() >= deadline:
                break
        stop.set()
        tour.join(timeout=10)
        say(f"• stopping: {receiver.count} notification(s) delivered")
        return 0 if receiver.count > 0 else 1
    finally:
        stop.set()
        if running is not None:
            running.stop()
        receiver.close()
        if mosq is not None:
            mosq.stop()
        if pg is not None:
            pg.stop()


def _start_tour(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Simulated devices: the simulators' narrated tour (a kitchen leak, a stairwell charge, a device dying)."""
    from simulators import tour

    with db.connect(settings.dsn) as conn:
        devices = [
            (d.id, d.kind.value, d.location.value)
            for d in core_repo.get_all_devices(conn)
            if d.adapter.value == "native"
        ]
    thread = threading.Thread(
        target=tour.run_tour,
        args=(settings.mqtt.url, settings.topic_prefix, devices, stop),
        kwargs={"say": say},
        name="demo-tour",
        daemon=True,
    )
    thread.start()
    return thread


def _field_tour(base: str, admin_token: str) -> None:
    """The work on foot, once (docs/field.md): the simulators' field day against the demo's own API, as the people's
    phones would play it — a patrol round whose failed check-list item becomes a work order, a resident report
    through a building's QR link followed to its outcome, and a drill the worker acknowledges. Their messages are
    printed as delivered."""
    from simulators.fieldday import FieldDay, FieldDayError

    try:
        result = FieldDay(base, admin_token, say=lambda line: say(f"  ⚙ {line}"), wait_s=15.0).run()
    except FieldDayError as exc:
        say(f"  ✗ the field day did not start: {exc}")
        return
    for step in result.steps:
        say(f"• {step.line}" if step.ok else f"  ✗ {step.line}")
