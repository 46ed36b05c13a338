"""Settings from the environment (GRIDWATCH_*) or a .env file."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

# Placeholders that only the demo may run with: anything else must be set explicitly.
DEMO_SECRET = "demo-secret-not-for-production"  # noqa: S105 - a marker, refused outside the demo


class MqttTarget:
    """A parsed mqtt:// or mqtts:// URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"GRIDWATCH_MQTT_URL must start with mqtt:// or mqtts://, got {url!r}")
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (8883 if self.tls else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None


class Settings(BaseSettings):
    """Every knob of a gridwatch process; names map to GRIDWATCH_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="GRIDWATCH_", env_file=".env", extra="ignore")

    database_url: str | None = None
    # The ingest's broker account (and, unless mqtt_command_url is set, the rules part's command publisher's).
    mqtt_url: str | None = None
    # The rules part's command publisher's own account. The shipped broker binds client ids to accounts, so a
    # process running both ingest and rules needs two accounts (`gridwatch mqtt credentials` makes `rules`).
    mqtt_command_url: str | None = None
    mqtt_client_id: str = "gridwatch-ingest"
    mqtt_ca_file: str | None = None
    topic_prefix: str = "gw/v1"
    # Shared subscription group for several ingest processes (MQTT v5 $share); empty = plain subscription.
    mqtt_share_group: str = ""
    # Root under which the bridges publish ("" = their defaults zigbee2mqtt/..., shellies/..., tele/...).
    bridge_topic_root: str = ""
    # Zigbee2MQTT's `mqtt.base_topic` (under the root).
    zigbee2mqtt_base_topic: str = Field(default="zigbee2mqtt", min_length=1, pattern=r"^[^+#]+$")
    # ESPHome nodes publish under <base>/<node name> (their `mqtt: topic_prefix: esphome/${name}`); "" = ESPHome's
    # own default, the node name at the top level (broad filters such as +/status on a shared broker).
    esphome_base_topic: str = Field(default="esphome", pattern=r"^[^+#]*$")
    secret_key: SecretStr = SecretStr(DEMO_SECRET)
    demo: bool = False

    # ingest/notify without the api in the same process export /metrics here (0 = off).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = ""
    # Signed links in messages (core/actionlink.py) open and act on one alarm, report, drill or order for this long.
    link_ttl_h: float = Field(default=24.0, gt=0, le=31 * 24)
    # Live alarm streams (SSE): open at once per token and per client address (429 beyond), and how often a stream
    # re-checks its credentials (revoked, expired, worker deactivated) when no alarm changes wake it.
    stream_max_per_token: int = Field(default=4, ge=1)
    stream_max_per_address: int = Field(default=32, ge=1)
    stream_recheck_s: float = Field(default=5.0, gt=0, le=60)

    # Ingest: a batch is bounded by MQTT v5 Receive Maximum, so size both together.
    batch_size: int = Field(default=2_000, ge=1, le=10_000)
    # Writer threads in one ingest process: while one waits on PostgreSQL another decodes and evaluates (bench/).
    ingest_writers: int = Field(default=3, ge=1, le=8)
    batch_linger_ms: int = Field(default=20, ge=0, le=5_000)
    queue_size: int = Field(default=2_000, ge=1)
    # The inbox's bound in payload bytes as well as messages: the broker hands the ingest up to Receive Maximum
    # messages of up to its max_packet_size (1 MiB) each, which unbounded would be gigabytes.
    queue_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    # What a reject keeps of its payload (the full size is stored beside it), how long rejects are kept, and how
    # many at most: a device cannot fill the database with junk (issue 23).
    reject_excerpt_bytes: int = Field(default=1_024, ge=0, le=65_536)
    reject_retention_days: float = Field(default=30.0, gt=0)
    reject_max_rows: int = Field(default=1_000_000, ge=1)
    max_reading_age_h: float = Field(default=24.0, gt=0)
    max_clock_skew_s: float = Field(default=300.0, gt=0)
    max_payload_bytes: int = Field(default=16_384, ge=256)

    # Notify
    notify_poll_s: float = Field(default=1.0, gt=0)
    notify_timeout_s: float = Field(default=5.0, gt=0)
    # A channel's whole request (connect, send, the full answer) must finish within this; notify_timeout_s bounds
    # each socket operation only, which an endpoint trickling its answer never trips.
    notify_deadline_s: float = Field(default=15.0, gt=0, le=300)
    notify_max_attempts: int = Field(default=8, ge=1)
    # When set, every delivery goes to this apprise URL instead of the worker's (demo, staging).
    notify_redirect_url: str | None = None
    # Escalation policy YAML (ladder per severity, night uplift, quiet hours, storm control);
    # default notify/policy.yaml.
    notify_policy: str | None = None

    rules_tick_s: float = Field(default=5.0, gt=0)
    # A rules file in force instead of the shipped rules (e.g. `extends: defaults` with site overrides); checked
    # with `gridwatch rules check FILE`.
    rules_file: str | None = None
    # Merchant score tick (restorations, overdue rectifications, upkeep); its work is per day, not per second.
    score_tick_s: float = Field(default=300.0, gt=0)
    timezone: str = "Asia/Shanghai"
    log_level: str = "INFO"

    # Scheduled reports (issue 22, docs/reports.md): the notify part sends the last complete day/week/month's report
    # to these apprise URLs (mailto://... for e-mail) once report_hour (local) has passed after the period ended.
    # Nothing is sent while report_notify or report_schedule is empty. JSON lists in the environment:
    # GRIDWATCH_REPORT_NOTIFY='["mailtos://user:pass@mail.example.org?to=office@example.org"]',
    # GRIDWATCH_REPORT_SCHEDULE='["weekly", "monthly"]'.
    report_notify: list[str] = Field(default_factory=list)
    report_schedule: list[Literal["daily", "weekly", "monthly"]] = Field(default_factory=list)
    # What the scheduled report covers: "street" (every community) or one of "community:ID", "grid:ID",
    # "micro_grid:ID".
    report_scope: str = Field(
        default="street", pattern=r"^(street|(community|grid|micro_grid):[A-Za-z0-9][A-Za-z0-9._:-]*)$"
    )
    report_format: Literal["pdf", "xlsx", "csv"] = "pdf"
    report_lang: Literal["zh-CN", "en"] = "zh-CN"
    report_hour: int = Field(default=7, ge=0, le=23)
    report_check_s: float = Field(default=300.0, gt=0)
    # The map (issue 22) is drawn from the registry's coordinates with no tiles from outside; a tile server on the
    # API's own host (a path such as /tiles/{z}/{x}/{y}.png behind the same proxy; the pages' CSP allows images
    # from 'self' only) may be drawn underneath.
    map_tile_url: str = Field(default="", pattern=r"^(/\S*\{z\}\S*\{x\}\S*\{y\}\S*)?$")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        # Reports, pages and the field worker read their local days in it: a mistyped zone failed each of them
        # (a 500 per report, a traceback per scheduled pass) instead of the start.
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai)") from None
        return value

    @model_validator(mode="after")
    def _check_urls(self) -> Settings:
        for url in (self.mqtt_url, self.mqtt_command_url):
            if url is not None:
                MqttTarget(url)
        return self

    @cached_property
    def mqtt(self) -> MqttTarget:
        """The broker to talk to."""
        if self.mqtt_url is None:
            raise ConfigError("GRIDWATCH_MQTT_URL is not set (e.g. mqtt://ingest:secret@broker:1883)")
        return MqttTarget(self.mqtt_url)

    @cached_property
    def mqtt_command(self) -> MqttTarget:
        """The broker account the rules part's command publisher uses."""
        if self.mqtt_command_url is not None:
            return MqttTarget(self.mqtt_command_url)
        if self.mqtt_url is None:
            raise ConfigError(
                "GRIDWATCH_MQTT_COMMAND_URL (or GRIDWATCH_MQTT_URL) is not set (e.g. mqtt://rules:secret@broker:1883)"
            )
        return MqttTarget(self.mqtt_url)

    @property
    def dsn(self) -> str:
        """The PostgreSQL connection string."""
        if self.database_url is None:
            raise ConfigError("GRIDWATCH_DATABASE_URL is not set (e.g. postgresql://gridwatch@db/gridwatch)")
        return self.database_url

    def check_production(self, parts: Iterable[str] = ()) -> None:
        """Refuse to run a real deployment on the demo's placeholders (the broker URLs only for the parts that
        connect to it: ingest, rules)."""
        if self.demo:
            return
        parts = set(parts)
        problems = []
        if self.secret_key.get_secret_value() == DEMO_SECRET:
            problems.append("GRIDWATCH_SECRET_KEY is the demo placeholder: set a long random value")
        elif len(self.secret_key.get_secret_value()) < 16:
            problems.append("GRIDWATCH_SECRET_KEY is shorter than 16 characters")
        if self.database_url is None:
            problems.append("GRIDWATCH_DATABASE_URL is not set")
        if "ingest" in parts and self.mqtt_url is None:
            problems.append("GRIDWATCH_MQTT_URL is not set (the ingest's broker account)")
        if "rules" in parts and self.mqtt_url is None and self.mqtt_command_url is None:
            problems.append("GRIDWATCH_MQTT_COMMAND_URL is not set (the rules part's broker account)")
        if {"ingest", "rules"} <= parts:
            problems += self._shared_account_problem()
        if problems:
            raise ConfigError("refusing to start: " + "; ".join(problems) + " (or run `gridwatch demo`)")

    def _shared_account_problem(self) -> list[str]:
        """Ingest and the command publisher in one process on one account: a broker that binds client ids to
        accounts (the shipped config) would have each connection throw the other off, for ever."""
        if self.mqtt_url is None:
            return []
        ingest, command = self.mqtt.username, self.mqtt_command.username
        if ingest is None or ingest != command:
            return []
        return [
            f"ingest and rules would share the broker account {ingest!r}: set GRIDWATCH_MQTT_COMMAND_URL to the "
            "rules part's account (`gridwatch mqtt credentials` makes `rules`)"
        ]
