"""Wire models of the v1 MQTT contract (DESIGN.md), validated strictly."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.domain import FLAG_FIELDS, MEASUREMENT_FIELDS


def check_device_text(value: str) -> str:
    """A string from a device that PostgreSQL can store as text: no NUL character (text and jsonb refuse it) and no
    lone surrogate (not valid UTF-8). Checked at decode time, so one bad message is a reject of its own instead of
    failing the batch it came in."""
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\u0000), which cannot be stored: fix the sender")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate, which is not valid Unicode text: fix the sender") from None
    return value


# Every free-text field a device sends (fault codes, command ids and details): storable, and bounded in length.
DeviceText = Annotated[str, AfterValidator(check_device_text)]
Percent = Annotated[float, Field(ge=0, le=100)]
CARRIED = frozenset(MEASUREMENT_FIELDS + FLAG_FIELDS + ("relay", "valve", "fault"))  # a message needs one of these
NonNegative = Annotated[float, Field(ge=0)]


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 text with an offset, or epoch milliseconds, as an aware UTC datetime."""
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds, not a boolean")  # noqa: TRY004 - pydantic turns ValueError into a field error
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("ts is not a finite number")
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"ts {value!r} is not a valid epoch-milliseconds time") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"ts {value[:40]!r} is not an RFC 3339 time") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"ts {value[:40]!r} has no UTC offset (RFC 3339 requires one, e.g. 'Z')")
        return parsed.astimezone(UTC)
    raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")


NO_CONTENT = "message carries no measurement or flag (e.g. gas_lel, co_ppm, smoke, relay)"


def lacks_content(data: Mapping[str, Any]) -> bool:
    """Whether a telemetry object that validated carries nothing to store: no field of CARRIED holds a value.
    `fault: null` counts (the device says "no fault")."""
    for name in CARRIED.intersection(data):  # a loop, not all(<generator>): on every message (bench/ profile)
        if data[name] is not None:
            return False
    return "fault" not in data


class TelemetryIn(BaseModel):
    """gw/v1/{device_id}/telemetry: every field optional, unknown fields kept as extras.

    The model is only pydantic's compiled checks: `ts` is parsed by parse_timestamp and the content rule is
    lacks_content, both called by the decoder (ingest.decode.validate_telemetry). As Python validators on the
    model they cost more than all the compiled checks together (docs/scaling.md).
    """

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    ts: Any = None  # parse_timestamp
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    gas_lel: Percent | None = None
    gas: bool | None = None
    co_ppm: Annotated[float, Field(ge=0, le=100_000)] | None = None
    smoke: bool | None = None
    smoke_db_m: Annotated[float, Field(ge=0, le=100)] | None = None
    temp_c: Annotated[float, Field(ge=-40, le=200)] | None = None
    power_w: Annotated[float, Field(ge=0, le=100_000)] | None = None
    current_a: Annotated[float, Field(ge=0, le=1_000)] | None = None
    voltage_v: Annotated[float, Field(ge=0, le=1_000)] | None = None
    energy_wh: Annotated[float, Field(ge=0, le=1e9)] | None = None
    relay: Literal["on", "off"] | None = None
    valve: Literal["open", "closed", "fault"] | None = None
    battery_pct: Percent | None = None
    tamper: bool | None = None
    test: bool | None = None
    fault: Annotated[DeviceText, Field(max_length=200)] | None = None


class StatusIn(BaseModel):
    """gw/v1/{device_id}/status (retained; the device's last will says offline)."""

    model_config = ConfigDict(extra="allow", strict=True)

    state: Literal["online", "offline"]


class CommandOut(BaseModel):
    """gw/v1/{device_id}/cmd, server to device."""

    id: str
    action: Literal["close_valve", "cut_power", "restore_power", "self_test", "silence"]
    alarm_id: int | None = None
    reason: str = ""


class CommandAckIn(BaseModel):
    """gw/v1/{device_id}/cmd/ack, device to server. The id names one of our commands (a UUID: 36 characters); the
    detail is the device's own words, bounded so an acknowledgement cannot carry a payload's worth of text."""

    model_config = ConfigDict(extra="allow")

    id: Annotated[DeviceText, Field(min_length=1, max_length=64)]
    ok: bool
    detail: Annotated[DeviceText, Field(max_length=500)] = ""
