"""docker-compose.yml parses, wires healthchecks, and only sets settings gridwatch knows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def gridwatch_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in data["services"].items() if svc.get("image") == "gridwatch:latest"}


def test_compose_services_and_dependencies() -> None:
    data = load_compose()
    services = data["services"]
    assert {"timescaledb", "mosquitto", "migrate", "ingest", "notify", "api"} <= services.keys()
    for name in ("timescaledb", "mosquitto", "api"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck"
    for name in ("ingest", "notify", "api"):
        deps = services[name]["depends_on"]
        assert deps["timescaledb"]["condition"] == "service_healthy"
        assert deps["mosquitto"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb")


def test_every_gridwatch_variable_is_a_setting_and_secrets_are_required() -> None:
    data = load_compose()
    known = {f"GRIDWATCH_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for name, svc in gridwatch_services(data).items():
        env = svc.get("environment", {})
        assert "GRIDWATCH_DATABASE_URL" in env and "GRIDWATCH_MQTT_URL" in env, name
        for key in env:
            seen.add(key)
            assert key in known, f"{name}: {key} is not a gridwatch setting"
        assert re.search(r"\$\{GRIDWATCH_SECRET_KEY:\?", str(env["GRIDWATCH_SECRET_KEY"])), \
            f"{name}: the secret key must be a required variable"
        Settings(_env_file=None, **{k.removeprefix("GRIDWATCH_").lower(): _example(v)  # type: ignore[arg-type]
                                    for k, v in env.items()})
    assert "GRIDWATCH_SECRET_KEY" in seen


def _example(value: Any) -> Any:
    """A compose value with ${VAR:?msg} / ${VAR:-default} substituted the way compose would."""
    text = str(value)
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "example-secret-value-123", text)


def test_dockerfile_installs_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    packages = re.search(r'packages = \[(.*?)\]', pyproject)
    assert packages
    for pkg in {p.strip().strip('"').split(".")[0] for p in packages.group(1).split(",")}:
        assert f"COPY {pkg} {pkg}" in dockerfile, f"Dockerfile does not copy {pkg}"


def test_split_processes_export_metrics(settings: Settings) -> None:
    """ingest alone (no api in the process) serves its counters on GRIDWATCH_METRICS_PORT."""
    import urllib.request

    from core.embedded import free_port
    from core.services import start_services

    port = free_port()
    running = start_services(settings.model_copy(update={"metrics_port": port}), ("ingest",))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        running.stop()
    assert "gridwatch_ingest_messages_total" in text
