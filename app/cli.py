"""The `gridwatch` command: demo, serve, migrate, load, token, rules, report, simulate, bench."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from core import db
from core.errors import GridwatchError
from core.logs import setup_logging
from core.settings import Settings

app = typer.Typer(
    help="gridwatch: gas, CO, smoke and e-bike charging alarms routed to micro-grid workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
rules_app = typer.Typer(help="Alarm rules.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
notify_app = typer.Typer(help="Notifications: test a worker's channels, silences.", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


def _settings() -> Settings:
    settings = Settings()
    setup_logging(settings.log_level)
    return settings


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


@app.command()
def migrate() -> None:
    """Apply database migrations (also done at start by serve and demo)."""
    settings = _settings()
    try:
        with db.connect(settings.dsn) as conn:
            applied = db.migrate(conn)
            timescale = db.has_timescale(conn)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    typer.echo(
        f"applied {len(applied)} migration(s){': ' + ', '.join(map(str, applied)) if applied else ''}; "
        f"storage: {'TimescaleDB hypertable' if timescale else 'plain PostgreSQL'}"
    )


@app.command()
def load(file: Annotated[Path, typer.Argument(help="registry YAML (see examples/)")]) -> None:
    """Load a community registry (idempotent upsert)."""
    from core import repo as core_repo
    from core.registry import read_registry
    from rules import service as rules_service
    from rules.ruleset import rules_in_force

    settings = _settings()
    try:
        registry = read_registry(file)
        with db.connect(settings.dsn) as conn:
            db.migrate(conn)
            with conn.transaction():
                counts = core_repo.upsert_registry(conn, registry=registry)
                devices = core_repo.get_devices(conn, ids=[d.id for d in registry.devices])
                # GAS-08 and other registry checks: a misplaced detector is an alarm from the moment it is loaded.
                checks = rules_service.check_installation(
                    conn, devices=devices, ruleset=rules_in_force(settings.rules_file)
                )
    except GridwatchError as exc:
        raise _fail(exc) from exc
    typer.echo(f"loaded {registry.community.id}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for change in checks:
        typer.echo(f"  registry check: {change.alarm_type} {change.kind} on {change.device_id}")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin | worker | merchant")],
    worker: Annotated[str | None, typer.Option(help="worker id (role worker)")] = None,
    merchant: Annotated[str | None, typer.Option(help="merchant id (role merchant)")] = None,
    label: Annotated[str, typer.Option(help="what the token is for")] = "",
    days: Annotated[int, typer.Option(min=1, max=3660, help="expires after this many days (every token expires)")] = 90,
    community: Annotated[
        list[str] | None,
        typer.Option(help="admin only, repeatable: limit the token to this community (none: every community)"),
    ] = None,
) -> None:
    """Create an API token and print it (it is stored only as a hash)."""
    from api import auth

    if role not in ("admin", "worker", "merchant"):
        raise _fail(ValueError(f"role {role!r} is not admin, worker or merchant"))
    settings = _settings()
    try:
        settings.check_production()
        with db.connect(settings.dsn) as conn, conn.transaction():
            token = auth.create_token(
                conn,
                secret_key=settings.secret_key.get_secret_value(),
                role=role,  # type: ignore[arg-type]
                worker_id=worker,
                merchant_id=merchant,
                label=label,
                ttl=timedelta(days=days),
                communities=community or None,
            )
    except GridwatchError as exc:
        raise _fail(exc) from exc
    typer.echo(token)


@rules_app.command("check")
def rules_check(
    file: Annotated[Path, typer.Argument(help="rules YAML (see rules/defaults.yaml; `extends: defaults` to override)")],
    device: Annotated[str | None, typer.Option(help="print the effective rules for this registered device")] = None,
) -> None:
    """Validate a rules file; with --device, print the rules in force for that device."""
    from rules.ruleset import describe_rules, load_rules

    try:
        ruleset = load_rules(file)
        target = None
        if device is not None:
            from core import repo as core_repo

            settings = _settings()
            with db.connect(settings.dsn) as conn:
                target = core_repo.get_devices(conn, ids=[device]).get(device)
            if target is None:
                raise _fail(ValueError(f"device {device!r} is not in the registry"))
    except GridwatchError as exc:
        raise _fail(exc) from exc
    typer.echo(describe_rules(ruleset, target))


def wait_for_signal(stop: threading.Event, running: object | None = None) -> Exception | None:
    """Block until SIGINT/SIGTERM, stop is set, or a running part gives up (returned)."""

    def _handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    while not stop.wait(0.5):
        fatal = getattr(running, "fatal", lambda: None)()
        if fatal is not None:
            return fatal  # type: ignore[no-any-return]
    return None


@app.command()
def serve(only: Annotated[str | None, typer.Option(help="comma list of ingest,notify,api")] = None) -> None:
    """Run ingest + rules + notify + api (or some of them)."""
    from app.services import PARTS, run_migrations, settle_heap, start_services

    settings = _settings()
    parts = tuple(p.strip() for p in only.split(",")) if only else PARTS
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise _fail(ValueError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}"))
    try:
        settings.check_production(parts)
        run_migrations(settings)
        running = start_services(settings, parts)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    settle_heap()
    stop = threading.Event()
    typer.echo(
        f"gridwatch serving {', '.join(parts)}"
        + (f" — API on http://{settings.api_host}:{settings.api_port}/docs" if "api" in parts else "")
    )
    try:
        fatal = wait_for_signal(stop, running)
    finally:
        running.stop()
    if fatal is not None:
        raise _fail(fatal)


@app.command()
def health(
    url: Annotated[
        str | None,
        typer.Option(
            help="the /healthz to ask (default: this process's GRIDWATCH_METRICS_PORT, else GRIDWATCH_API_PORT)"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 3.0,
) -> None:
    """Ask a running `serve` whether each of its parts works (exit 0) or not (exit 1): the deployment's health
    check, run inside the service's container with the service's own environment."""
    import urllib.error
    import urllib.request

    settings = Settings()
    url = url or f"http://127.0.0.1:{settings.metrics_port or settings.api_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - an http URL of our own
            typer.echo(answer.read().decode())
    except urllib.error.HTTPError as exc:
        typer.echo(exc.read().decode() or str(exc), err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:
        typer.echo(f"{url}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="where the private database and broker keep their files")] = Path(
        ".gridwatch/demo"
    ),
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds (default: until Ctrl-C)")] = None,
    port: Annotated[int, typer.Option(help="API and pages port")] = 8000,
) -> None:
    """Everything on embedded defaults: private PostgreSQL and Mosquitto, example community, simulated devices."""
    from app.demo import run_demo

    setup_logging("WARNING")
    try:
        code = run_demo(data_dir=data_dir, duration=duration, port=port)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    sys.exit(code)


@notify_app.command("test")
def notify_test(worker: Annotated[str, typer.Option(help="worker id from the registry")]) -> None:
    """Send a test message through every channel of a worker and show each channel's result."""
    from datetime import UTC, datetime

    from notify import service as notify_service
    from notify.delivery import Sender

    settings = _settings()
    sender = Sender(
        timeout_s=settings.notify_timeout_s,
        deadline_s=settings.notify_deadline_s,
        redirect_url=settings.notify_redirect_url,
    )
    try:
        with db.connect(settings.dsn) as conn:
            results = notify_service.send_test(conn, sender=sender, worker_id=worker, now=datetime.now(UTC))
    except GridwatchError as exc:
        raise _fail(exc) from exc
    finally:
        sender.close()
    for res in results:
        typer.echo(f"{'ok  ' if res.ok else 'FAIL'} {res.channel}: {res.detail}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@notify_app.command("silence")
def notify_silence(
    minutes: Annotated[float, typer.Option(help="how long the maintenance window lasts")],
    site: Annotated[str | None, typer.Option(help="site id")] = None,
    device: Annotated[str | None, typer.Option(help="device id")] = None,
    reason: Annotated[str, typer.Option(help="why (shown in the audit)")] = "maintenance",
    include_life_safety: Annotated[
        bool, typer.Option(help="also silence gas, CO and smoke alarms (explicit override)")
    ] = False,
) -> None:
    """Silence a site or a device for a while (life-safety alarms stay loud unless overridden)."""
    from datetime import UTC, datetime

    from notify import service as notify_service

    settings = _settings()
    try:
        with db.connect(settings.dsn) as conn, conn.transaction():
            silence = notify_service.create_silence(
                conn,
                site_id=site,
                device_id=device,
                minutes=minutes,
                reason=reason,
                created_by="cli",
                include_life_safety=include_life_safety,
                now=datetime.now(UTC),
            )
    except GridwatchError as exc:
        raise _fail(exc) from exc
    typer.echo(
        f"silence {silence.id}: {site or device} until {silence.ends_at.isoformat(timespec='minutes')}"
        + (" (life-safety included)" if include_life_safety else " (life-safety alarms still notify)")
    )


# ------------------------------------------------------------------ devices: commissioning (issue 19)
device_app = typer.Typer(help="Devices: commissioning checks.", no_args_is_help=True)
app.add_typer(device_app, name="device")
COMMISSION_SILENCE_MAX_S = 30 * 60  # as the API: the installer's window, never longer than half an hour


def _start_commissioning(settings: Settings, device_id: str, *, by: str, within_s: float | None, silence: bool) -> Any:
    """Start the check (and the installer window's silence) in one transaction; returns the check."""
    from datetime import UTC, datetime

    from core import repo as core_repo
    from core.errors import NotFoundError
    from notify import service as notify_service
    from rules.commissioning import service as commissioning
    from rules.ruleset import default_rules

    now = datetime.now(UTC)
    with db.connect(settings.dsn) as conn, conn.transaction():
        device = core_repo.get_devices(conn, ids=[device_id]).get(device_id)
        if device is None:
            raise NotFoundError(f"device {device_id!r} is not registered (or not active)")
        check = commissioning.start_check(
            conn, device=device, by=by, ruleset=default_rules(), now=now, within_s=within_s
        )
        if silence:
            notify_service.create_silence(
                conn,
                site_id=None,
                device_id=device_id,
                minutes=min((check.deadline_at - now).total_seconds(), COMMISSION_SILENCE_MAX_S) / 60,
                reason=f"commissioning check #{check.id} (installer window)",
                created_by=by,
                include_life_safety=True,
                now=now,
            )
    return check


def _wait_for_verdict(settings: Settings, check: Any, *, poll_s: float = 2.0) -> Any:
    """Poll the check until the rules timer has judged it (or a minute past its deadline)."""
    import time as _time
    from datetime import UTC, datetime

    from rules.commissioning import service as commissioning

    give_up = check.deadline_at + timedelta(minutes=1)
    while True:
        with db.connect(settings.dsn) as conn:
            found = next(
                (c for c in commissioning.get_checks(conn, device_id=check.device_id) if c.id == check.id), None
            )
        if found is None or found.status != "pending" or datetime.now(UTC) > give_up:
            return found
        _time.sleep(poll_s)


@device_app.command("commission")
def device_commission(
    device_id: Annotated[str, typer.Argument(help="device id")],
    by: Annotated[str, typer.Option(help="who runs the check (worker or installer), for the record")] = "cli",
    within: Annotated[
        float | None, typer.Option(help="seconds the device has to report and test (default the rule's 600)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait for the verdict (the rules part of serve must be running)")] = True,
    silence: Annotated[
        bool, typer.Option(help="hold the device's notifications during the check (the test press alarms)")
    ] = True,
) -> None:
    """Start a commissioning check: the device must report within the window, and a detector must send its test
    or alarm signal (press its test button now). Exit 0 passed, 1 failed, 3 no verdict yet."""
    settings = _settings()
    try:
        check = _start_commissioning(settings, device_id, by=by, within_s=within, silence=silence)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    todo = "report and send its test or alarm signal (press its test button)" if check.needs_test else "report"
    typer.echo(f"check #{check.id}: {device_id} must {todo} by {check.deadline_at.isoformat(timespec='seconds')}")
    if not wait:
        return
    found = _wait_for_verdict(settings, check)
    if found is None or found.status == "pending":
        typer.secho("no verdict yet: is the rules part running (gridwatch serve --only rules)?", err=True)
        raise typer.Exit(3)
    colour = typer.colors.GREEN if found.status == "passed" else typer.colors.RED
    typer.secho(f"check #{found.id} {found.status}: {found.reason}", fg=colour)
    raise typer.Exit(0 if found.status == "passed" else 1)


# ------------------------------------------------------------------ merchant safety score (docs/score.md)
score_app = typer.Typer(
    help="Merchant safety score: show, recompute from the ledger, tick, check a policy.", no_args_is_help=True
)
app.add_typer(score_app, name="score")


@score_app.command("show")
def score_show(
    merchant: Annotated[str, typer.Argument(help="merchant id")],
    limit: Annotated[int, typer.Option(help="ledger entries to print, newest first")] = 20,
) -> None:
    """A merchant's score, tier, review flag, open items and ledger."""
    from score import service as score_service

    settings = _settings()
    try:
        with db.connect(settings.dsn) as conn:
            standing = score_service.get_score(conn, merchant_id=merchant)
            page = score_service.get_ledger(conn, merchant_id=merchant, limit=limit)
            items = score_service.get_open_items(conn, merchant_id=merchant)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    s = standing
    typer.echo(
        f"{s.merchant_id} {s.merchant_name}: {s.score} (tier {s.tier}, {s.tier_handling})"
        + (f" — ADMISSION REVIEW: {'; '.join(s.review_reasons)}" if s.review else "")
    )
    if s.locked_until:
        typer.echo(f"  no restorations until {s.locked_until:%Y-%m-%d %H:%M} UTC")
    for alarm in items.alarms:
        typer.echo(f"  open alarm {alarm.id}: {alarm.type} ({alarm.severity}) on {alarm.device_id}")
    for finding in items.findings:
        typer.echo(
            f"  open finding {finding.id}: {finding.kind} due {finding.due_at:%Y-%m-%d %H:%M}"
            + (" OVERDUE" if finding.overdue else "")
        )
    for e in page.items:
        source = f"alarm {e.alarm_id}" if e.alarm_id else f"finding {e.finding_id}" if e.finding_id else "-"
        typer.echo(f"  {e.at:%Y-%m-%d %H:%M} {e.points:+4d} {e.code:6s} {e.reason} [{source}; {e.actor or 'policy'}]")


@score_app.command("recompute")
def score_recompute(refresh: Annotated[bool, typer.Option(help="store the recomputed standings")] = True) -> None:
    """Derive every merchant's standing from the ledger; report differences from the stored scores."""
    from score import service as score_service

    settings = _settings()
    try:
        with db.connect(settings.dsn) as conn, conn.transaction():
            report = score_service.recompute_all(conn, refresh=refresh)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    typer.echo(
        f"{report.merchants} merchants, {report.compared} compared, {len(report.mismatches)} mismatches"
        + (f", {report.refreshed} refreshed" if refresh else "")
    )
    for m in report.mismatches:
        typer.echo(f"  {m.merchant_id}: stored {m.field} {m.stored!r}, ledger says {m.derived!r}")


@score_app.command("tick")
def score_tick() -> None:
    """Run the time-based score work once now (restorations, overdue rectifications, upkeep, snapshots)."""
    from datetime import UTC, datetime

    from score import service as score_service

    settings = _settings()
    try:
        with db.connect(settings.dsn) as conn, conn.transaction():
            result = score_service.run_score_tick(conn, now=datetime.now(UTC))
    except GridwatchError as exc:
        raise _fail(exc) from exc
    typer.echo(
        f"score tick: {result.written or 'nothing due'} ({result.merchants} merchants)"
        if result.ran
        else "score tick: another process is ticking"
    )


@score_app.command("check")
def score_check(
    file: Annotated[Path | None, typer.Argument(help="policy YAML (default: the shipped one)")] = None,
) -> None:
    """Validate a score policy file against the alarm types of the rule set."""
    from rules.ruleset import default_rules
    from score.policy import load_policy

    try:
        policies = load_policy(file, ruleset=default_rules())
    except GridwatchError as exc:
        raise _fail(exc) from exc
    p = policies.default
    typer.echo(
        f"ok: base {p.base}; tiers "
        + ", ".join(f"{b.tier} {b.min}-{b.max}" for b in p.tiers)
        + f"; {len(p.alarm_deductions)} alarm deductions, {len(p.findings)} finding kinds"
        + (f"; overrides for {', '.join(policies.communities)}" if policies.communities else "")
    )


def _report_scope(community: str | None, grid: str | None, micro_grid: str | None, street: bool) -> Any:
    from report.service import Scope

    chosen = [(k, v) for k, v in (("community", community), ("grid", grid), ("micro_grid", micro_grid)) if v]
    if len(chosen) + street != 1:
        raise typer.BadParameter("give exactly one of --community, --grid, --micro-grid or --street")
    return Scope("street") if street else Scope(chosen[0][0], chosen[0][1])  # type: ignore[arg-type]


def _report_period(month: str | None, week: str | None, day: str | None) -> str:
    given = [p for p in (month, week, day) if p]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --month 2026-11, --week 2026-W45 or --day 2026-11-05")
    return given[0]


@app.command()
def report(
    community: Annotated[str | None, typer.Option(help="community id")] = None,
    grid: Annotated[str | None, typer.Option(help="grid id")] = None,
    micro_grid: Annotated[str | None, typer.Option("--micro-grid", help="micro-grid id")] = None,
    street: Annotated[bool, typer.Option(help="every community")] = False,
    month: Annotated[str | None, typer.Option(help="e.g. 2026-11")] = None,
    week: Annotated[str | None, typer.Option(help="ISO week, e.g. 2026-W45")] = None,
    day: Annotated[str | None, typer.Option(help="e.g. 2026-11-05")] = None,
    format: Annotated[str, typer.Option(help="pdf, xlsx or csv")] = "pdf",
    lang: Annotated[str, typer.Option(help="zh-CN or en")] = "zh-CN",
    out: Annotated[Path | None, typer.Option(help="file to write (default: its own name, here)")] = None,
) -> None:
    """A report for a day, week or month (the street's time zone) as PDF, XLSX or CSV (docs/reports.md)."""
    from datetime import UTC, datetime

    from report import render
    from report import service as report_service
    from report.period import parse_period

    scope = _report_scope(community, grid, micro_grid, street)
    text = _report_period(month, week, day)
    if format not in render.FORMATS:
        raise typer.BadParameter(f"--format: one of {', '.join(render.FORMATS)}")
    if lang not in ("zh-CN", "en"):
        raise typer.BadParameter("--lang: zh-CN or en")
    settings = _settings()
    try:
        period = parse_period(text, settings.timezone)
        with db.connect(settings.dsn) as conn, conn.transaction():
            built = report_service.build_report(conn, scope=scope, period=period, now=datetime.now(UTC))
        data = render.render(built, format, lang)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    target = out or Path(render.filename(built, format))
    target.write_bytes(data)
    k = built.kpis
    typer.echo(
        f"{target}: {render.title_of(built, lang)} — {k.alarms} alarms, {k.unreached} unreached, "
        f"{k.offline}/{k.devices} devices offline"
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Benchmarks with targets (from a source checkout); `gridwatch bench --help` lists the sizes."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "run.py").is_file():
        raise _fail(FileNotFoundError(f"bench/ is not next to {root / 'core'}: run it from a gridwatch checkout"))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.run import main as bench_main  # the checkout's bench/, not an installed package

    raise typer.Exit(bench_main(list(ctx.args)))


@app.command()
def simulate(
    registry: Annotated[Path | None, typer.Option(help="registry YAML whose devices to simulate")] = None,
    devices: Annotated[int | None, typer.Option(help="number of devices (synthetic without --registry)")] = None,
    rate: Annotated[float, typer.Option(help="fleet telemetry messages per second, in total")] = 100.0,
    scenario: Annotated[str | None, typer.Option(help="library scenario name (or a scenario YAML file)")] = None,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same readings")] = 1,
    duration: Annotated[str | None, typer.Option(help="fleet run time: 90s, 10m, forever (default 60s)")] = None,
    write_registry: Annotated[
        Path | None, typer.Option(help="write the registry of the synthetic devices (or the scenario) to FILE and exit")
    ] = None,
    connections: Annotated[int | None, typer.Option(help="MQTT connections shared by the fleet")] = None,
    speed: Annotated[
        float | None,
        typer.Option(help="scenario event seconds per wall second (default: as fast as the broker takes them)"),
    ] = None,
    status: Annotated[
        bool | None,
        typer.Option(help="publish a retained online status per fleet device (default: on up to 10,000 devices)"),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the scenario library and exit")] = False,
    field_day: Annotated[
        bool,
        typer.Option(
            "--field-day",
            help="people instead of devices: a patrol round, a resident report and a drill through a running API",
        ),
    ] = False,
    api: Annotated[
        str | None, typer.Option(help="--field-day: the API's address (default http://127.0.0.1:GRIDWATCH_API_PORT)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="GRIDWATCH_API_TOKEN", help="--field-day: an admin token", show_default=False)
    ] = None,
    worker_token: Annotated[
        str | None,
        typer.Option(
            envvar="GRIDWATCH_WORKER_TOKEN",
            help="--field-day: the inspector's worker token (default: the admin makes a one-day one, revoked after)",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="--field-day: play it for real (a merchant's score, a work order and workers' drill messages)",
        ),
    ] = False,
) -> None:
    """Simulated devices: a scenario in simulated time, a live fleet at a steady rate, or both; or, with
    --field-day, the people of a field day against a running API."""
    from simulators.cli import SimulateOptions, list_scenarios, run_field_day, run_simulate

    if list_:
        list_scenarios()
        return
    settings = _settings()
    if field_day:
        if not token:
            raise _fail(ValueError("--field-day needs an admin token: --token gw_... (or GRIDWATCH_API_TOKEN)"))
        if not yes:
            raise _fail(
                ValueError(
                    "--field-day acts for real on the deployment it is given: a shop's failed check-list item becomes "
                    "a work order and costs its merchant points, the micro-grid's workers get a drill, a resident "
                    "report is filed and closed. Run it against a demo or staging deployment, and confirm with --yes"
                )
            )
        try:
            code = run_field_day(
                api or f"http://127.0.0.1:{settings.api_port}", token, worker_token=worker_token, wait_s=2.0
            )
        except GridwatchError as exc:
            raise _fail(exc) from exc
        raise typer.Exit(code)
    try:
        opts = SimulateOptions(
            mqtt_url=settings.mqtt_url or "",
            topic_prefix=settings.topic_prefix,
            registry=registry,
            devices=devices,
            rate=rate,
            scenario=scenario,
            seed=seed,
            duration=duration,
            write_registry=write_registry,
            connections=connections,
            speed=speed,
            status=status,
        )
        if write_registry is None:
            settings.mqtt  # noqa: B018 - raises a ConfigError naming GRIDWATCH_MQTT_URL when unset
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        code = run_simulate(opts, stop=stop)
    except (GridwatchError, ValueError) as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


mqtt_app = typer.Typer(help="MQTT broker: per-device credentials and ACL.", no_args_is_help=True)
app.add_typer(mqtt_app, name="mqtt")


@mqtt_app.command("credentials")
def mqtt_credentials(
    registry: Annotated[Path, typer.Option(help="registry YAML (see examples/)")],
    out: Annotated[Path, typer.Option(help="directory for passwd, acl and credentials.csv")] = Path("deploy/mosquitto"),
    rotate: Annotated[list[str] | None, typer.Option(help="give this account a new password (repeatable)")] = None,
    rotate_all: Annotated[bool, typer.Option(help="new passwords for every account")] = False,
    ingest_user: Annotated[str, typer.Option(help="the ingest's broker username")] = "ingest",
    ingest_password: Annotated[
        str | None,
        typer.Option(
            envvar="GRIDWATCH_MQTT_INGEST_PASSWORD", help="the ingest's password (default: kept or generated)"
        ),
    ] = None,
    extra_ingest: Annotated[
        list[str] | None,
        typer.Option(
            help="one more ingest account, for one more ingest process on the shared subscription (repeatable): "
            "the broker binds client ids to accounts, so two processes cannot share one"
        ),
    ] = None,
    rules_user: Annotated[str, typer.Option(help="the rules part's broker username (its command publisher)")] = "rules",
    rules_password: Annotated[
        str | None,
        typer.Option(
            envvar="GRIDWATCH_MQTT_RULES_PASSWORD", help="the rules part's password (default: kept or generated)"
        ),
    ] = None,
    simulator: Annotated[bool, typer.Option(help="also the simulators' account (staging brokers only)")] = False,
    simulator_password: Annotated[
        str | None,
        typer.Option(
            envvar="GRIDWATCH_MQTT_SIMULATOR_PASSWORD", help="the simulators' password (default: kept or generated)"
        ),
    ] = None,
) -> None:
    """Write Mosquitto's password file and ACL from the registry (devices pinned to their own topics)."""
    from core import mqtt_auth
    from core.registry import read_registry

    settings = Settings()
    try:
        reg = read_registry(registry)
        existing = mqtt_auth.read_credentials(out / "credentials.csv")
        accounts = mqtt_auth.build_accounts(
            reg,
            prefix=settings.topic_prefix,
            bridge_root=settings.bridge_topic_root,
            zigbee2mqtt_base=settings.zigbee2mqtt_base_topic.strip("/"),
            esphome_base=settings.esphome_base_topic.strip("/"),
            existing=existing,
            rotate=rotate or [],
            rotate_all=rotate_all,
            ingest_user=ingest_user,
            ingest_password=ingest_password,
            extra_ingest_users=extra_ingest or [],
            rules_user=rules_user,
            rules_password=rules_password,
            simulator_password=(simulator_password or "") if simulator else None,
        )
        files = mqtt_auth.write_files(out, accounts)
    except GridwatchError as exc:
        raise _fail(exc) from exc
    changed = sorted(a.username for a in accounts if existing.get(a.username) != a.password)
    typer.echo(
        f"{len(accounts)} accounts -> {files['passwd']}, {files['acl']}, {files['healthcheck']} (the broker's "
        f"health probe); plaintext for provisioning in {files['credentials']} (mode 0600, keep it out of the broker)"
    )
    if changed:
        typer.echo(f"new or rotated passwords: {', '.join(changed)}")
    typer.echo("reload the broker to apply: kill -HUP <mosquitto pid> (docker compose kill -s HUP mosquitto)")


field_app = typer.Typer(help="The work on foot: resident report QR codes.", no_args_is_help=True)
app.add_typer(field_app, name="field")


@field_app.command("qr-codes")
def field_qr_codes(
    out: Annotated[Path, typer.Argument(help="the HTML page to write (print it)")],
    site: Annotated[list[str] | None, typer.Option(help="building site id (repeat; default every building)")] = None,
    stairwells: Annotated[int, typer.Option(min=0, max=20, help="a code per stairwell too, 1..N")] = 0,
    base_url: Annotated[str | None, typer.Option(help="public address (default GRIDWATCH_PUBLIC_URL)")] = None,
) -> None:
    """A printable page of the resident report QR codes of buildings (one per building, and per stairwell)."""
    from field import service as field_service
    from field.qrsheet import qr_sheet
    from field.repo import Scope

    settings = _settings()
    base = base_url or settings.public_url
    if not base:
        raise _fail(GridwatchError("give --base-url or set GRIDWATCH_PUBLIC_URL: the codes hold the public address"))
    with db.connect(settings.dsn) as conn:
        sites = [s for s in field_service.list_sites(conn, scope=Scope()) if not site or s.id in site]
    missing = sorted(set(site or []) - {s.id for s in sites})
    if missing:
        raise _fail(GridwatchError(f"no such site: {', '.join(missing)}"))
    page = qr_sheet(sites, base_url=base, secret=settings.secret_key.get_secret_value(), stairwells=stairwells)
    out.write_text(page, encoding="utf-8")
    typer.echo(f"{page.count('<figure')} codes -> {out}")


if __name__ == "__main__":
    app()
