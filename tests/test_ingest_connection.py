"""The ingest stops with a clear message when the broker refuses its credentials (retrying cannot help)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.embedded import EmbeddedMosquitto
from core.settings import Settings
from tests.conftest import ROOT


@pytest.fixture
def secured_broker(tmp_path: Path) -> EmbeddedMosquitto:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "ingest", "right-password"], check=True, capture_output=True
    )
    passwd.chmod(0o644)
    broker = EmbeddedMosquitto(tmp_path / "mq", extra_config=f"allow_anonymous false\npassword_file {passwd}")
    broker.start()
    yield broker  # type: ignore[misc]
    broker.stop()


def test_bad_credentials_stop_the_ingest_with_a_clear_message(
    settings: Settings, secured_broker: EmbeddedMosquitto
) -> None:
    env = {
        **os.environ,
        "GRIDWATCH_DATABASE_URL": settings.dsn,
        "GRIDWATCH_MQTT_URL": f"mqtt://ingest:wrong-password@127.0.0.1:{secured_broker.port}",
        "GRIDWATCH_SECRET_KEY": "test-secret-key-0123456789",
        "GRIDWATCH_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--only", "ingest"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "broker refused the connection" in result.stderr
    assert "credentials" in result.stderr


def test_serve_refuses_the_demo_secret(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env |= {"GRIDWATCH_DATABASE_URL": settings.dsn, "GRIDWATCH_MQTT_URL": settings.mqtt_url or ""}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "GRIDWATCH_SECRET_KEY is the demo placeholder" in result.stderr
