"""Issue 16: the deployment rehearsal. What users run is the built package and docker-compose.yml, so this test
builds the wheel, installs it into a fresh virtualenv (not editable), and runs every service of the compose file
as its own process with the command and environment the file gives it (tests/deploy.py plays compose's part:
interpolation, start order, the container network), against a private database and a Mosquitto configured from
deploy/mosquitto with the generated password file and ACL. Devices speak only through the broker, with their own
credentials; people only through the API.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import psycopg.sql
import pytest

from tests import deploy
from tests.conftest import ROOT, Services
from tests.support import Receiver, wait_for
from tests.test_mqtt_security import make_certs

pytestmark = pytest.mark.slow

PREFIX = "gw/v1"  # the compose file sets no GRIDWATCH_TOPIC_PREFIX: devices use the default


def rehearsal_registry(receiver: Receiver) -> str:
    return textwrap.dedent(f"""\
        community: {{id: rc1, name: Rehearsal community}}
        grids:
          - id: rg1
            name: Grid one
            micro_grids:
              - {{id: rmg1, name: Micro one}}
        workers:
          - {{id: rw1, name: Wang, role: micro_grid_worker, micro_grids: [rmg1], notify: ["{receiver.url("rw1")}"]}}
        merchants:
          - {{id: rm1, name: Noodle shop}}
        sites:
          - {{id: rs1, kind: shop, micro_grid: rmg1, merchant: rm1, name: Noodle shop, address: 1 Lane, floor: 1}}
        devices:
          - {{id: r-gas, kind: gas_detector, site: rs1, location: kitchen}}
          - {{id: r-valve, kind: gas_valve, site: rs1, location: kitchen}}
          - {{id: r-smoke, kind: smoke_detector, site: rs1, location: corridor}}
          - {{id: r-port, kind: charging_port, site: rs1, location: charging_shed}}
        """)


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> str:
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv[:4])} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed into a fresh virtualenv; returns the venv's bin folder."""
    base = tmp_path_factory.mktemp("wheel")
    # The build context, as Docker would send it: the checkout's files (tracked or new, not ignored).
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT).splitlines()
    context = base / "context"
    for name in files:
        if (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"), str(context)])
    wheel = next((base / "dist").glob("gridwatch-*.whl"))
    shipped = {Path(n).parent.as_posix() for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    source = {
        Path(n).parent.as_posix()
        for n in files
        if n.endswith(".py") and "/" in n and n.split("/")[0] not in ("tests", "bench", "examples", "scripts", "docs")
    }
    assert source <= shipped, f"the wheel lacks {sorted(source - shipped)}"
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], timeout=600)
    return venv / "bin"


@dataclass
class Deployment:
    """The compose services running as processes, and what the test needs to reach them."""

    bin: Path
    workdir: Path
    data: dict[str, Any]
    network: deploy.Network
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    ports: dict[str, dict[int, int]] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def gridwatch(self, service: str, *args: str) -> str:
        """The installed CLI with a service's environment, as `docker compose exec SERVICE gridwatch ...`."""
        return run([str(self.bin / "gridwatch"), *args], env=self.env(service), cwd=self.workdir)

    def env(self, service: str) -> dict[str, str]:
        base = {"PATH": f"{self.bin}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(self.workdir), "LANG": "C.UTF-8"}
        return {**base, **self.envs[service]}

    def start(self, name: str) -> None:
        service = self.data["services"][name]
        self.envs[name], self.ports[name] = deploy.service_environment(service, self.network)
        argv = deploy.command_of(service, deploy.dockerfile_entrypoint())
        argv[0] = str(self.bin / argv[0])
        self.logs[name] = self.workdir / f"{name}.log"
        with self.logs[name].open("wb") as out:
            self.procs[name] = subprocess.Popen(
                argv, env=self.env(name), cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )

    def healthy(self, name: str) -> bool:
        check = deploy.healthcheck_argv(self.data["services"][name])
        assert check is not None, f"{name} has no health check"
        if check[0] == "gridwatch":
            check[0] = str(self.bin / "gridwatch")
        return (
            subprocess.run(
                check, env=self.env(name), cwd=self.workdir, capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )

    def wait_healthy(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy(name):
            proc = self.procs[name]
            assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{self.log(name)}"
            assert time.monotonic() < deadline, f"{name} not healthy within {timeout} s:\n{self.log(name)}"
            time.sleep(0.5)

    def log(self, name: str) -> str:
        return self.logs[name].read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api'][8000]}"


@pytest.fixture
def deployment(installed: Path, services: Services, tmp_path: Path, receiver: Receiver) -> Iterator[Deployment]:
    variables = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(12),
        "GRIDWATCH_SECRET_KEY": secrets.token_urlsafe(32),
        "GRIDWATCH_MQTT_INGEST_PASSWORD": secrets.token_urlsafe(12),
        "GRIDWATCH_MQTT_RULES_PASSWORD": secrets.token_urlsafe(12),
        "GRIDWATCH_MQTT_SIMULATOR_PASSWORD": secrets.token_urlsafe(12),
    }
    data = deploy.load(variables)
    workdir = tmp_path / "app"  # the image's WORKDIR: the examples are there, as the Dockerfile copies them
    workdir.mkdir()
    (workdir / "examples").symlink_to(ROOT / "examples")
    registry = workdir / "rehearsal.yaml"
    registry.write_text(rehearsal_registry(receiver), encoding="utf-8")

    # timescaledb: a fresh database (the compose volume) owned by the compose user on the test's server.
    db_url = data["services"]["migrate"]["environment"]["GRIDWATCH_DATABASE_URL"]
    parts = psycopg.conninfo.conninfo_to_dict(db_url)
    database = f"gw_rehearsal_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.postgres_url, autocommit=True) as conn:
        role = psycopg.sql.Identifier(str(parts["user"]))
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (parts["user"],)).fetchone():
            # The timescaledb image makes POSTGRES_USER a superuser (it creates the extension).
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    role, psycopg.sql.Literal(str(parts["password"]))
                )
            )
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(psycopg.sql.Identifier(database), role))
    pg = psycopg.conninfo.conninfo_to_dict(services.postgres_url)
    network = deploy.Network(
        hosts={("timescaledb", 5432): (str(pg.get("host", "127.0.0.1")), int(pg["port"]))},
        databases={str(parts["dbname"]): database},
    )

    # mosquitto: credentials generated from the registry (the compose file's first step), the shipped config
    # with its container paths mapped to the volumes' sources, a TLS certificate for the 8883 listener.
    conf_dir = tmp_path / "mosquitto"
    env = {
        "PATH": f"{installed}:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "GRIDWATCH_MQTT_INGEST_PASSWORD": variables["GRIDWATCH_MQTT_INGEST_PASSWORD"],
        "GRIDWATCH_MQTT_RULES_PASSWORD": variables["GRIDWATCH_MQTT_RULES_PASSWORD"],
        "GRIDWATCH_MQTT_SIMULATOR_PASSWORD": variables["GRIDWATCH_MQTT_SIMULATOR_PASSWORD"],
    }
    run(
        [
            str(installed / "gridwatch"),
            "mqtt",
            "credentials",
            "--registry",
            str(registry),
            "--out",
            str(conf_dir),
            "--simulator",
        ],
        env=env,
        cwd=workdir,
    )
    (conf_dir / "mosquitto.conf").write_text(
        (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8"), encoding="utf-8"
    )
    make_certs(conf_dir / "certs")
    broker_svc = data["services"]["mosquitto"]
    mounts = deploy.volume_map(
        broker_svc,
        named={"mosquitto-data": tmp_path / "mosquitto-data"},
        binds={"./deploy/mosquitto/" + p.name: p for p in conf_dir.iterdir()}
        | {"./deploy/mosquitto/certs": conf_dir / "certs"},
    )
    (tmp_path / "mosquitto-data").mkdir()
    text, listeners = deploy.rewrite_listeners(
        deploy.rewrite_paths((conf_dir / "mosquitto.conf").read_text(encoding="utf-8"), mounts)
    )
    conf = tmp_path / "mosquitto-run.conf"
    # As root Mosquitto would switch to the 'mosquitto' user, which cannot read pytest's private tmp dir (in the
    # image it runs as that user over files it owns).
    conf.write_text(("user root\n" if os.geteuid() == 0 else "") + text, encoding="utf-8")
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=(tmp_path / "mosquitto.log").open("wb"), stderr=subprocess.STDOUT
    )
    network.hosts[("mosquitto", 1883)] = ("127.0.0.1", listeners[1883])
    network.hosts[("mosquitto", 8883)] = ("127.0.0.1", listeners[8883])
    dep = Deployment(installed, workdir, data, network)
    dep.credentials = {
        row["username"]: row["password"]  # type: ignore[attr-defined]
        for row in csv.DictReader((conf_dir / "credentials.csv").open(encoding="utf-8"))
    }
    dep.broker_port = listeners[1883]  # type: ignore[attr-defined]
    try:
        wait_for(lambda: _broker_answers(listeners[1883]), timeout=15, what="mosquitto listening")
        check = deploy.healthcheck_argv(broker_svc)
        assert check is not None
        # inside the broker's container: its port and the files mounted into it (the probe's generated credential)
        check = [deploy.rewrite_paths(a, mounts).replace("-p 1883", f"-p {listeners[1883]}") for a in check]
        wait_for(
            lambda: subprocess.run(check, capture_output=True, timeout=10, check=False).returncode == 0,
            timeout=15,
            what="the broker's own health check",
        )
        # `docker compose up -d`: the services in compose's order; migrate must complete, the rest turn healthy.
        for name in deploy.start_order(deploy.gridwatch_services(data)):
            dep.start(name)
            if name == "migrate":
                assert dep.procs[name].wait(timeout=120) == 0, dep.log(name)
            else:
                dep.wait_healthy(name)
        # Then, as README's "Running it for real": `docker compose exec api gridwatch load ...`.
        dep.gridwatch("api", "load", str(registry))
        yield dep
    finally:
        dep.stop()
        broker.terminate()
        broker.wait(timeout=15)
        with psycopg.connect(services.postgres_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(database))
            )


def _broker_answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class FieldDevice:
    """A native device logged in with its own generated credentials (client id = its id)."""

    def __init__(self, dep: Deployment, device_id: str, *, keepalive: int = 60, will: bool = False) -> None:
        self.id = device_id
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(device_id, dep.credentials[device_id])  # type: ignore[attr-defined]
        if will:
            self.client.will_set(f"{PREFIX}/{device_id}/status", json.dumps({"state": "offline"}), qos=1, retain=True)
        self.commands: list[dict[str, Any]] = []
        self.answer = True
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/{device_id}/cmd", qos=1)
        self.client.connect("127.0.0.1", dep.broker_port, keepalive=keepalive)  # type: ignore[attr-defined]
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        command = json.loads(msg.payload)
        self.commands.append(command)
        if self.answer and command["action"] == "close_valve":
            client.publish(f"{PREFIX}/{self.id}/cmd/ack", json.dumps({"id": command["id"], "ok": True}), qos=1)
            client.publish(f"{PREFIX}/{self.id}/telemetry", json.dumps({"valve": "closed"}), qos=1)

    def send(self, at: datetime | None = None, **fields: Any) -> None:
        body = {**fields, **({"ts": int(at.timestamp() * 1000)} if at else {})}
        info = self.client.publish(f"{PREFIX}/{self.id}/telemetry", json.dumps(body), qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def go_silent(self) -> None:
        """Stop talking without saying goodbye (power lost): the socket stays open, no PINGREQ follows."""
        self.client.loop_stop()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_compose_deployment_runs_every_part_from_the_wheel(
    deployment: Deployment, receiver: Receiver, services: Services
) -> None:
    dep = deployment
    dsn = dep.envs["api"]["GRIDWATCH_DATABASE_URL"]
    admin = dep.gridwatch("api", "token", "create", "--role", "admin").strip()
    worker = dep.gridwatch("api", "token", "create", "--role", "worker", "--worker", "rw1").strip()
    http = httpx.Client(base_url=dep.api(), timeout=10)

    valve, gas = FieldDevice(dep, "r-valve"), FieldDevice(dep, "r-gas")
    port, smoke = FieldDevice(dep, "r-port"), FieldDevice(dep, "r-smoke", keepalive=2, will=True)
    port.answer = False  # a charging port that never confirms its cut-off
    try:
        # 1. A gas leak (judged in event time: rise, then clean air for longer than the clear delay) closes the
        #    valve: the rules part publishes close_valve, the valve acknowledges, the command is confirmed.
        now = datetime.now(UTC)
        gas.send(now - timedelta(seconds=160), gas_lel=62.0)  # two samples spanning 10 s (issue 19: GAS-02/03)
        gas.send(now - timedelta(seconds=150), gas_lel=62.0)
        wait_for(
            lambda: any(c["action"] == "close_valve" for c in valve.commands),
            timeout=30,
            what="close_valve at the valve",
        )
        wait_for(
            lambda: (
                {r[0] for r in _query(dsn, "SELECT status FROM command WHERE device_id = 'r-valve'")} == {"confirmed"}
            ),
            timeout=30,
            what="the close_valve command confirmed",
        )
        # 2. The worker's phone (the local receiver) gets the alarm through notify.
        wait_for(lambda: receiver.for_path("rw1"), timeout=30, what="a notification at the worker's receiver")
        # 3. Acknowledged and resolved through the API; a verified hazard on a merchant's premises is a score entry.
        gas.send(now - timedelta(seconds=140), gas_lel=0.0)
        gas.send(now - timedelta(seconds=60), gas_lel=0.0)
        alarms = wait_for(
            lambda: [
                a
                for a in http.get("/api/v1/alarms", headers=_bearer(worker)).json()["items"]
                if a["device_id"] == "r-gas" and not a["active"]
            ],
            timeout=20,
            what="the gas alarm cleared",
        )
        for alarm in alarms:
            assert http.post(f"/api/v1/alarms/{alarm['id']}/ack", headers=_bearer(worker)).status_code == 200
            answer = http.post(
                f"/api/v1/alarms/{alarm['id']}/resolve",
                headers=_bearer(worker),
                json={"disposition": "real_hazard", "note": "hose cracked, replaced"},
            )
            assert answer.status_code == 200, answer.text
        ledger = wait_for(
            lambda: http.get("/api/v1/merchants/rm1/ledger", headers=_bearer(admin)).json()["items"],
            timeout=30,
            what="a ledger entry for the merchant",
        )
        assert any(e["code"] == "M-D02" and e["points"] < 0 for e in ledger), ledger
        # 4. A detector that goes silent: the broker notices (keepalive) and publishes its will; offline is raised.
        smoke.send(battery_pct=90.0)
        smoke.go_silent()
        wait_for(lambda: _alarm_types(dsn, "r-smoke") >= {"offline"}, timeout=30, what="r-smoke offline")
        # 5. The rules part's timer: a cut_power that the port never confirms is an actuation failure 30 s later.
        t0 = datetime.now(UTC) - timedelta(seconds=5)
        port.send(t0, current_a=8.0, power_w=1800.0)
        port.send(t0 + timedelta(seconds=3), current_a=8.0, power_w=1800.0)
        wait_for(
            lambda: any(c["action"] == "cut_power" for c in port.commands), timeout=30, what="cut_power at the port"
        )
        wait_for(
            lambda: "actuation_failed" in _alarm_types(dsn, "r-port"),
            timeout=60,
            what="actuation_failed raised by the rules timer",
        )
    finally:
        for device in (valve, gas, port):
            device.close()
        smoke.client.disconnect()
    # Every part stayed healthy throughout, as its own health check says.
    for name in ("ingest", "rules", "notify", "api"):
        assert dep.procs[name].poll() is None, dep.log(name)
        assert dep.healthy(name), f"{name} unhealthy:\n{dep.log(name)}"
    # The sim profile's service logs in with the account `mqtt credentials --simulator` made, and its readings
    # are stored.
    dep.gridwatch("api", "load", "examples/storage-area.yaml")
    dep.start("simulator")
    try:
        wait_for(
            lambda: _query(dsn, "SELECT count(*) FROM reading WHERE device_id LIKE 'hhc-%'")[0][0] > 20,
            timeout=60,
            what="simulated readings stored",
        )
    finally:
        dep.procs["simulator"].terminate()
        dep.procs["simulator"].wait(timeout=15)
    assert "refused" not in dep.log("simulator"), dep.log("simulator")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def _alarm_types(dsn: str, device: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT type FROM alarm WHERE device_id = %s", (device,))}
