"""Composition root for long-running processes: wires ingest, notify and api together for `serve`.

This module and core/cli.py are the only places in core that reach into the stages (lazily, inside
functions), because they are what the console script starts.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from core import actionlink, db
from core.loop import Check
from core.ops import OpsServer
from core.settings import Settings

log = logging.getLogger(__name__)

PARTS = ("ingest", "rules", "notify", "api")


@dataclass
class Running:
    """The parts started by start_services, to be stopped together."""

    settings: Settings
    parts: dict[str, Any] = field(default_factory=dict)
    api_server: Any = None
    api_thread: threading.Thread | None = None
    ops: OpsServer | None = None

    def checks(self) -> list[Check]:
        """Every running part's health (what /healthz answers and `gridwatch health` asks)."""
        found = [check for part in self.parts.values() for check in part.checks()]
        if self.api_thread is not None and not self.api_thread.is_alive():
            found.append(Check("api", False, "the API server has stopped"))
        return found

    def fatal(self) -> Exception | None:
        """The first part that gave up for good (e.g. the broker refused our credentials)."""
        for part in self.parts.values():
            if getattr(part, "fatal", None) is not None:
                return part.fatal  # type: ignore[no-any-return]
        return None

    def stop(self) -> None:
        if self.ops is not None:
            self.ops.stop()
        if self.api_server is not None:
            self.api_server.should_exit = True
            if self.api_thread:
                self.api_thread.join(timeout=10)
        for name in ("ingest", "rules", "actuator", "score", "notify", "report", "field"):
            part = self.parts.get(name)
            if part is not None:
                part.stop()


def run_migrations(settings: Settings) -> list[int]:
    """Apply pending migrations."""
    with db.connect(settings.dsn) as conn:
        return db.migrate(conn)


# Young objects per collection: a batch's readings, decoded payloads and rule states die within the batch, so a
# threshold above what one batch allocates lets most of them go uncollected-by-scan instead of surviving into
# the older generations (Python's default is 700).
YOUNG_GC_THRESHOLD = 20_000


def settle_heap() -> None:
    """For a long-running server process, once its parts have started: move what start-up built (the ingest's
    device cache — 100k Device objects for a district — the compiled rules, the imported modules) out of the
    cyclic collector's way, and collect young objects less often: full collections walking that cache took a
    large share of the ingest's CPU (docs/scaling.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def start_services(settings: Settings, only: tuple[str, ...] = PARTS, *, api_in_thread: bool = True) -> Running:
    """Start the requested parts in this process."""
    import uvicorn

    running = Running(settings)
    if "ingest" in only:
        from ingest.worker import IngestWorker

        running.parts["ingest"] = IngestWorker(settings)
        running.parts["ingest"].start()
    if "rules" in only:
        # The rules timer (offline, session length, command deadlines) and the command publisher.
        from functools import partial

        from ingest.adapters import bases, encode_command
        from rules.actuation.publisher import Actuator
        from rules.scheduler import RulesTimer

        running.parts["rules"] = RulesTimer(settings)
        running.parts["rules"].start()
        # The commands go out in each device's dialect, which ingest's adapters know (rules may not import ingest).
        encode = partial(encode_command, prefix=settings.topic_prefix, bridge_root=bases(settings))
        running.parts["actuator"] = Actuator(settings, encode=encode)
        running.parts["actuator"].start()
        # Merchant score: verified hazards as they are resolved, then clean-period restorations, overdue
        # rectifications, upkeep and snapshots on the tick (docs/score.md).
        from score.worker import ScoreWorker

        running.parts["score"] = ScoreWorker(settings.dsn, interval_s=settings.score_tick_s)
        running.parts["score"].start()
    if "notify" in only:
        from notify.worker import NotifyWorker

        running.parts["notify"] = NotifyWorker(settings)
        running.parts["notify"].start()
        if settings.report_notify and settings.report_schedule:
            # Scheduled reports (issue 22) go out through apprise, like every other message.
            from report.schedule import ReportWorker

            running.parts["report"] = ReportWorker(settings)
            running.parts["report"].start()
        # Work orders' notices (the party told, the overdue ladder) go out through notify's apprise sender.
        from field.worker import FieldWorker
        from notify.delivery import Sender

        sender = Sender(
            timeout_s=settings.notify_timeout_s,
            deadline_s=settings.notify_deadline_s,
            redirect_url=settings.notify_redirect_url,
            parallel=2,
        )

        def send(urls: list[str], title: str, body: str, who: str) -> list[tuple[bool, str]]:
            return [(r.ok, r.detail) for r in sender.send(urls, title, body, recipient=who)]

        # Field's messages carry signed links to their item as alarms' do (core/actionlink.py), with a public URL.
        links = (
            actionlink.Signer(settings.secret_key.get_secret_value(), settings.public_url)
            if settings.public_url
            else None
        )
        running.parts["field"] = FieldWorker(settings.dsn, send=send, tz=settings.timezone, links=links)
        running.parts["field"].start()
    if "api" in only:
        from api.app import create_app

        config = uvicorn.Config(
            create_app(settings, checks=running.checks),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            access_log=False,
            # open SSE streams (live alarm board) never finish by themselves
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        running.api_server = server
        if api_in_thread:
            server.config.install_signal_handlers = False  # type: ignore[attr-defined]
            running.api_thread = threading.Thread(target=server.run, name="api", daemon=True)
            running.api_thread.start()
    if settings.metrics_port:
        # Counters live per process: every process exports its own, with its health beside them, on the internal
        # port (the api's public port serves /metrics to admins only).
        running.ops = OpsServer(settings.metrics_port, running.checks)
        running.ops.start()
        log.info("metrics and health on :%d (/metrics, /healthz)", running.ops.port)
    return running
