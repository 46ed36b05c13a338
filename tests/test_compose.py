"""docker-compose.yml parses, wires healthchecks, and only sets settings gridwatch knows."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import app
from app.services import PARTS, start_services
from core.settings import Settings
from tests import deploy
from tests.support import wait_for

ROOT = Path(__file__).resolve().parent.parent


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_services_and_dependencies() -> None:
    data = load_compose()
    services = data["services"]
    assert {"timescaledb", "mosquitto", "migrate", "ingest", "rules", "notify", "api"} <= services.keys()
    for name in ("ingest", "rules", "notify", "api"):
        deps = services[name]["depends_on"]
        assert deps["timescaledb"]["condition"] == "service_healthy"
        assert deps["mosquitto"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb")


def test_every_gridwatch_variable_is_a_setting_and_secrets_are_required() -> None:
    data = load_compose()
    known = {f"GRIDWATCH_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for name, svc in deploy.gridwatch_services(data, profiles=("sim",)).items():
        env = svc.get("environment", {})
        assert "GRIDWATCH_DATABASE_URL" in env, name
        # Each service holds only the broker credentials it uses (issue 23): the ingest its account, the rules
        # part its command publisher's, the simulators theirs; notify and the api none.
        parts = parts_run_by(svc)
        assert ("GRIDWATCH_MQTT_URL" in env) == ("ingest" in parts or name == "simulator"), name
        assert ("GRIDWATCH_MQTT_COMMAND_URL" in env) == ("rules" in parts), name
        for key in env:
            seen.add(key)
            assert key in known, f"{name}: {key} is not a gridwatch setting"
        assert re.search(r"\$\{GRIDWATCH_SECRET_KEY:\?", str(env["GRIDWATCH_SECRET_KEY"])), (
            f"{name}: the secret key must be a required variable"
        )
        Settings(
            _env_file=None,
            **{
                k.removeprefix("GRIDWATCH_").lower(): _example(v)  # type: ignore[arg-type]
                for k, v in env.items()
            },
        )
    assert "GRIDWATCH_SECRET_KEY" in seen


def _example(value: Any) -> Any:
    """A compose value with ${VAR:?msg} / ${VAR:-default} substituted the way compose would."""
    text = str(value)
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "example-secret-value-123", text)


def test_the_image_installs_the_wheel_and_the_context_holds_every_package() -> None:
    """The image installs the wheel built from the context (tests/test_deployment.py runs that wheel); nothing
    the wheel is built from may be left out of the context."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN pip wheel .* \.$", dockerfile, re.MULTILINE), dockerfile
    assert "pip install --no-cache-dir /dist/*.whl" in dockerfile
    assert deploy.dockerfile_entrypoint() == ["gridwatch"]
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    roots = re.search(r"include = \[(.*?)\]", pyproject)
    assert roots
    for root in (r.strip().strip('"').rstrip("*") for r in roots.group(1).split(",")):
        assert (ROOT / root / "__init__.py").exists(), root
        assert not any(fnmatch.fnmatch(root, pattern) for pattern in ignored), f".dockerignore drops {root}"


def parts_run_by(service: dict[str, Any]) -> set[str]:
    """The PARTS a compose service's `serve` command runs (all of them without --only)."""
    command = service.get("command", [])
    if not command or command[0] != "serve":
        return set()
    if "--only" in command:
        return set(command[command.index("--only") + 1].split(","))
    return set(PARTS)


def test_every_part_runs_in_some_service_and_every_long_running_service_is_health_checked() -> None:
    data = load_compose()
    services = deploy.gridwatch_services(data)  # without the sim profile: what `docker compose up` starts
    assert set().union(*(parts_run_by(s) for s in services.values())) == set(PARTS)
    for name, svc in services.items():
        if svc.get("restart") == "no":  # one-shot (migrate)
            continue
        assert deploy.healthcheck_argv(svc) == ["gridwatch", "health"], f"{name}: health check"
        if "api" not in parts_run_by(svc):
            assert "GRIDWATCH_METRICS_PORT" in svc["environment"], f"{name}: health is served on the metrics port"
    broker = data["services"]["mosquitto"]
    assert deploy.healthcheck_argv(broker) and deploy.healthcheck_argv(data["services"]["timescaledb"])


@pytest.mark.parametrize("part", PARTS)
def test_health_check_fails_when_its_part_is_dead(
    settings: Settings, part: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gridwatch health` (the compose health check) with the process's own settings: 0 while the part works,
    1 naming the part once it has stopped working, although the process is still there."""
    from core.embedded import free_port

    port = free_port()
    running = start_services(settings.model_copy(update={"metrics_port": port, "api_port": free_port()}), (part,))
    env = {
        "GRIDWATCH_METRICS_PORT": str(port) if part != "api" else "0",
        "GRIDWATCH_API_PORT": str(running.settings.api_port),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    try:
        wait_for(lambda: runner.invoke(app, ["health"]).exit_code == 0, timeout=20, what=f"{part} healthy")
        if part == "api":
            running.api_server.should_exit = True  # the server stops; the process lives on
        else:
            loops = [getattr(p, "loop", None) or p.loops[0] for p in running.parts.values()]
            loops[0].stop()
        result = wait_for(
            lambda: (r := runner.invoke(app, ["health"])).exit_code == 1 and r,
            timeout=20,
            what=f"{part}'s health check failing",
        )
        if part != "api":
            assert "not running" in result.output
    finally:
        running.stop()


def test_split_processes_export_metrics(settings: Settings) -> None:
    """ingest alone (no api in the process) serves its counters on GRIDWATCH_METRICS_PORT."""
    import urllib.request

    from app.services import start_services
    from core.embedded import free_port

    port = free_port()
    running = start_services(settings.model_copy(update={"metrics_port": port}), ("ingest",))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        running.stop()
    assert "gridwatch_ingest_messages_total" in text
    assert "gridwatch_ingest_outcomes_total" in text, "issue 19: every message counted by adapter and outcome"
