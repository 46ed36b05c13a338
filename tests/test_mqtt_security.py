"""Issue 9, MQTT security: per-device credentials and an ACL generated from the registry, on a real Mosquitto
started with the shipped deploy/mosquitto/mosquitto.conf (paths and ports rewritten for the test).

Must show 3: a device cannot publish as another: the broker refuses the PUBLISH (MQTT v5 PUBACK reason 135),
nothing reaches the ingest, and the attempt is in the broker log.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.services import Running, start_services
from core import mqtt_auth
from core.embedded import free_port
from core.errors import BrokerAuthError, ConfigError
from core.registry import parse_registry
from core.settings import MqttTarget, Settings
from tests.conftest import ROOT, small_registry
from tests.support import wait_for

DEPLOY_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"


def make_certs(d: Path) -> None:
    """A private CA and a server certificate for localhost / 127.0.0.1 (openssl, EC keys: fast)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=gridwatch test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )


@dataclass
class SecureBroker:
    port: int
    tls_port: int
    log_file: Path
    ca_file: Path
    accounts: dict[str, mqtt_auth.Account]
    proc: subprocess.Popen[bytes]

    def password(self, user: str) -> str:
        return self.accounts[user].password

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def secure_broker(tmp_path: Path, settings: Settings) -> Iterator[SecureBroker]:
    """Mosquitto with the shipped config, the generated passwd + ACL for the small registry, and TLS."""
    registry = parse_registry(small_registry())
    accounts = mqtt_auth.build_accounts(registry, prefix=settings.topic_prefix)
    conf_dir = tmp_path / "mosquitto"
    mqtt_auth.write_files(conf_dir, accounts)
    make_certs(conf_dir / "certs")
    port, tls_port = free_port(), free_port()
    log_file = conf_dir / "mosquitto.log"
    text = DEPLOY_CONF.read_text(encoding="utf-8")
    for old, new in (
        ("/mosquitto/config/", f"{conf_dir}/"),
        ("/mosquitto/data/", f"{conf_dir}/data/"),
        ("/mosquitto/certs/", f"{conf_dir}/certs/"),
        ("listener 1883", f"listener {port} 127.0.0.1"),
        ("listener 8883", f"listener {tls_port} 127.0.0.1"),
        ("log_dest stdout", f"log_dest file {log_file}"),
    ):
        assert old in text, f"the shipped config no longer has {old!r}"
        text = text.replace(old, new)
    (conf_dir / "data").mkdir()
    conf = conf_dir / "mosquitto.conf"
    # as root, mosquitto would switch to the 'mosquitto' user, which cannot read pytest's private tmp dir
    conf.write_text(("user root\n" if os.geteuid() == 0 else "") + text, encoding="utf-8")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    broker = SecureBroker(
        port, tls_port, log_file, conf_dir / "certs" / "ca.crt", {a.username: a for a in accounts}, proc
    )
    wait_for(lambda: "running" in broker.log() if log_file.exists() else False, timeout=10, what="mosquitto up")
    yield broker
    proc.terminate()
    proc.wait(timeout=10)


class Device:
    """A paho MQTT v5 client that records PUBACK / SUBACK reason codes and the CONNACK."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *,
        tls_ca: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.client_id = f"dev-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.connack: Any = None
        self.connected = threading.Event()
        self.pubacks: dict[int, Any] = {}
        self.subacks: dict[int, list[Any]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc)
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(mid, rcs)
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_message = lambda _c, _u, msg: self.messages.append((msg.topic, msg.payload))
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack = reason
        self.connected.set()

    def publish(self, topic: str, payload: str) -> Any:
        """Publish QoS 1 and return the broker's PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, timeout=10, what="PUBACK")
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> Any:
        _, mid = self.client.subscribe(topic, qos=1)
        wait_for(lambda: mid in self.subacks, timeout=10, what="SUBACK")
        return self.subacks[mid][0]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def with_mqtt(settings: Settings, url: str, **extra: Any) -> Settings:
    return Settings(_env_file=None, **{**settings.model_dump(), "mqtt_url": url, **extra})  # type: ignore[call-arg]


def count(dsn: str, sql: str, *args: object) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def ingest_on_secure(loaded: Settings, secure_broker: SecureBroker) -> Iterator[Settings]:
    s = with_mqtt(loaded, f"mqtt://ingest:{secure_broker.password('ingest')}@127.0.0.1:{secure_broker.port}")
    running: Running = start_services(s, ("ingest",))
    wait_for(running.parts["ingest"].consumer.connected.is_set, what="ingest connected with its own account")
    yield s
    running.stop()


def test_device_cannot_publish_as_another(ingest_on_secure: Settings, secure_broker: SecureBroker) -> None:
    settings = ingest_on_secure
    prefix = settings.topic_prefix
    gas1 = Device(secure_broker.port, "gas-1", secure_broker.password("gas-1"))
    gas2 = Device(secure_broker.port, "gas-2", secure_broker.password("gas-2"))
    server = Device(secure_broker.port, "ingest", secure_broker.password("ingest"))
    try:
        assert gas1.connected.wait(10) and not gas1.connack.is_failure
        own = gas1.publish(f"{prefix}/gas-1/telemetry", '{"seq": 1, "gas_lel": 3}')
        forged = gas1.publish(f"{prefix}/gas-2/telemetry", '{"seq": 1, "gas_lel": 60}')
        # Mosquitto 2.0 grants the SUBACK but filters each message by the read ACL on delivery
        gas1.subscribe(f"{prefix}/gas-2/cmd")
        gas2.subscribe(f"{prefix}/gas-2/cmd")
        assert not server.publish(f"{prefix}/gas-2/cmd", '{"id": "c1", "action": "self_test"}').is_failure
        wait_for(lambda: gas2.messages, what="gas-2 to receive its own command")
        wait_for(
            lambda: count(settings.dsn, "SELECT count(*) FROM reading WHERE device_id = 'gas-1'") == 1,
            what="gas-1's own reading stored",
        )
        time.sleep(1.0)  # had the forged message passed, it would be stored (and alarming) by now
        forged_stored = count(settings.dsn, "SELECT count(*) FROM reading WHERE device_id = 'gas-2'")
        forged_rejects = count(settings.dsn, "SELECT count(*) FROM ingest_reject")
        alarms = count(settings.dsn, "SELECT count(*) FROM alarm WHERE device_id = 'gas-2'")
        snooped = list(gas1.messages)
    finally:
        gas1.close()
        gas2.close()
        server.close()
    log_text = secure_broker.log()
    denied = re.findall(rf"Denied PUBLISH from {gas1.client_id} \(.*'{re.escape(prefix)}/gas-2/telemetry'", log_text)
    print(
        f"SECURITY own_puback={own.getName()} forged_puback={forged.getName()} ({forged.value}) "
        f"snooped={len(snooped)} forged_stored={forged_stored} broker_log={denied}"
    )
    assert not own.is_failure
    assert forged.value == 135, f"the broker must refuse the forged PUBLISH, answered {forged.getName()}"
    assert snooped == [], "a device must not read another device's commands"
    assert forged_stored == 0 and forged_rejects == 0 and alarms == 0, "the forged message must not reach ingest"
    assert denied, "the refused publish must be visible in the broker log"


@pytest.mark.parametrize(("user", "password"), [("gas-1", "wrong-password"), (None, None), ("nobody", "x")])
def test_wrong_or_missing_credentials_are_refused(
    secure_broker: SecureBroker, user: str | None, password: str | None
) -> None:
    d = Device(secure_broker.port, user, password)
    try:
        assert d.connected.wait(10)
        assert d.connack.is_failure, f"{user!r} must not get in"
        assert d.connack.getName() in ("Bad user name or password", "Not authorized")
    finally:
        d.close()


@pytest.mark.allow_error_logs  # the consumer logs the refused connection at ERROR, as it should
def test_ingest_stops_retrying_on_bad_credentials(
    loaded: Settings, secure_broker: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    s = with_mqtt(loaded, f"mqtt://ingest:s3cret-in-url@127.0.0.1:{secure_broker.port}")
    running = start_services(s, ("ingest",))
    try:
        fatal = wait_for(running.fatal, timeout=10, what="ingest to give up on bad credentials")
    finally:
        running.stop()
    assert isinstance(fatal, BrokerAuthError)
    assert "check GRIDWATCH_MQTT_URL" in str(fatal)
    assert "s3cret-in-url" not in str(fatal) and "s3cret-in-url" not in caplog.text, "no secret in logs or errors"


def test_ingest_and_device_over_tls(loaded: Settings, secure_broker: SecureBroker) -> None:
    """mqtts:// with GRIDWATCH_MQTT_CA_FILE: the ingest verifies the broker's certificate and still ingests."""
    url = f"mqtts://ingest:{secure_broker.password('ingest')}@localhost:{secure_broker.tls_port}"
    s = with_mqtt(loaded, url, mqtt_ca_file=str(secure_broker.ca_file))
    assert s.mqtt.tls and s.mqtt.port == secure_broker.tls_port
    running = start_services(s, ("ingest",))
    gas2 = None
    try:
        wait_for(running.parts["ingest"].consumer.connected.is_set, what="ingest connected over TLS")
        gas2 = Device(
            secure_broker.tls_port,
            "gas-2",
            secure_broker.password("gas-2"),
            tls_ca=secure_broker.ca_file,
            host="localhost",
        )
        assert gas2.connected.wait(10) and not gas2.connack.is_failure
        assert not gas2.publish(f"{s.topic_prefix}/gas-2/telemetry", '{"seq": 7, "gas_lel": 2}').is_failure
        wait_for(
            lambda: count(s.dsn, "SELECT count(*) FROM reading WHERE device_id = 'gas-2'") == 1,
            what="reading over TLS stored",
        )
    finally:
        if gas2 is not None:
            gas2.close()
        running.stop()


def test_untrusted_certificate_is_refused(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """A client that does not trust the broker's CA does not connect (no silent downgrade)."""
    other = tmp_path / "other"
    make_certs(other)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(other / "ca.crt"))
    with pytest.raises(OSError, match="certificate verify failed"):
        client.connect("localhost", secure_broker.tls_port)


@pytest.mark.parametrize(
    ("url", "tls", "port", "user", "password"),
    [
        ("mqtt://broker", False, 1883, None, None),
        ("mqtts://broker", True, 8883, None, None),
        ("mqtts://ingest:p%40ss@broker:9883", True, 9883, "ingest", "p@ss"),
        ("mqtt://ingest:secret@127.0.0.1:1884", False, 1884, "ingest", "secret"),
    ],
)
def test_mqtt_url_parsing(url: str, tls: bool, port: int, user: str | None, password: str | None) -> None:
    target = MqttTarget(url)
    assert (target.tls, target.port, target.username, target.password) == (tls, port, user, password)


def test_settings_refuse_other_schemes() -> None:
    with pytest.raises(ConfigError, match="mqtt:// or mqtts://"):
        MqttTarget("tcp://broker:1883")
    assert "mqtt_ca_file" in Settings.model_fields


def test_credentials_command_keeps_passwords_and_rotates_one(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    reg.write_text(small_registry(), encoding="utf-8")
    out = tmp_path / "out"
    runner = CliRunner()
    env = {"GRIDWATCH_TOPIC_PREFIX": "gw/v1"}
    first = runner.invoke(app, ["mqtt", "credentials", "--registry", str(reg), "--out", str(out)], env=env)
    assert first.exit_code == 0, first.output
    before = mqtt_auth.read_credentials(out / "credentials.csv")
    assert set(before) == {"gas-1", "gas-2", "smoke-1", "ingest", "healthcheck"}
    assert (out / "credentials.csv").stat().st_mode & 0o777 == 0o600
    second = runner.invoke(
        app, ["mqtt", "credentials", "--registry", str(reg), "--out", str(out), "--rotate", "gas-1"], env=env
    )
    assert second.exit_code == 0, second.output
    after = mqtt_auth.read_credentials(out / "credentials.csv")
    assert after["gas-1"] != before["gas-1"]
    assert {k: v for k, v in after.items() if k != "gas-1"} == {k: v for k, v in before.items() if k != "gas-1"}
    hashes = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert all(mqtt_auth.verify_password(after[u], h) for u, h in hashes.items())
    assert not mqtt_auth.verify_password(before["gas-1"], hashes["gas-1"])
    acl = (out / "acl").read_text()
    assert "user gas-1\ntopic readwrite gw/v1/gas-1/#\n" in acl
    assert "user ingest\ntopic readwrite gw/v1/#\n" in acl
    bad = runner.invoke(app, ["mqtt", "credentials", "--registry", str(reg), "--out", str(out), "--rotate", "ghost"])
    assert bad.exit_code == 2 and "unknown account" in bad.output


@pytest.mark.parametrize(("device_id", "problem"), [("a:b", "cannot be a broker username")])
def test_unsafe_ids_are_refused(device_id: str, problem: str) -> None:
    text = small_registry().replace("id: gas-1,", f"id: '{device_id}',")
    with pytest.raises(ConfigError, match=problem):
        mqtt_auth.build_accounts(parse_registry(text))


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ hashes and mosquitto_passwd's are the same scheme: each verifies the other's."""
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "alice", "s3cret"], check=True, capture_output=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert mqtt_auth.verify_password("s3cret", theirs)
    assert not mqtt_auth.verify_password("other", theirs)
    assert mqtt_auth.verify_password("s3cret", mqtt_auth.hash_password("s3cret"))


def test_esphome_nodes_and_a_configured_zigbee2mqtt_base_in_the_acl() -> None:
    """Issue 19: an ESPHome node is pinned to <esphome base>/<node>/# (status, states and the commands it takes);
    the ingest reads the ESPHome base and the configured Zigbee2MQTT base topic."""
    text = """\
community: {id: c1, name: C}
grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
sites: [{id: s1, kind: shop, micro_grid: mg1}]
devices:
  - {id: e-gas, kind: gas_detector, site: s1, location: kitchen, adapter: esphome, foreign_id: kitchen-node}
  - {id: z-gas, kind: gas_detector, site: s1, location: kitchen, adapter: zigbee2mqtt, foreign_id: kitchen_gas}
"""
    accounts = {a.username: a for a in mqtt_auth.build_accounts(parse_registry(text), zigbee2mqtt_base="z2m-home")}
    assert accounts["e-gas"].acl == (("readwrite", "esphome/kitchen-node/#"),)
    assert accounts["bridge-zigbee2mqtt"].acl == (("readwrite", "z2m-home/#"),)
    assert {("readwrite", "esphome/#"), ("readwrite", "z2m-home/#")} <= set(accounts["ingest"].acl)
    bare = {a.username: a for a in mqtt_auth.build_accounts(parse_registry(text), bridge_root="r", esphome_base="")}
    assert bare["e-gas"].acl == (("readwrite", "r/kitchen-node/#"),)
    assert ("readwrite", "r/kitchen-node/#") in bare["ingest"].acl and ("readwrite", "r/#") not in bare["ingest"].acl
