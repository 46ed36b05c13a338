"""Device models: what each kind of device would report, in event time, deterministic for a seed.

A model is advanced to an event time (epoch seconds) and returns the native telemetry fields it would
publish then. It owns its sequence counter, clock offset, battery and sensor drift. Scenarios change the
environment a device is exposed to (gas concentration, CO, smoke, ambient temperature) or plug a battery
into a charger; the model turns that into noisy, lagging, drifting readings and its own alarm flags.
Nothing here touches the network.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.domain import DeviceKind

# 1 %LEL of methane is 500 ppm (LEL 5 %vol, IEC 60079-20-1); Shelly Gas reports ppm.
PPM_PER_LEL = 500.0


def format_ts(epoch_s: float, style: str) -> int | str:
    """Device time as epoch milliseconds or RFC 3339 (both are in the v1 contract)."""
    if style == "rfc3339":
        return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return round(epoch_s * 1000)


@dataclass
class Environment:
    """What a device is exposed to; scenarios set or ramp these values in event time."""

    gas_lel: float = 0.0
    co_ppm: float = 0.0
    smoke_db_m: float = 0.0
    temp_c: float = 24.0


@dataclass
class Ramp:
    """A linear change of one environment value between two event times."""

    name: str
    start_t: float
    end_t: float
    start_value: float
    end_value: float

    def value_at(self, t: float) -> float:
        if t >= self.end_t or self.end_t <= self.start_t:
            return self.end_value
        frac = max(0.0, (t - self.start_t) / (self.end_t - self.start_t))
        return self.start_value + (self.end_value - self.start_value) * frac


@dataclass
class Command:
    """A server command as the device sees it."""

    id: str
    action: str
    alarm_id: int | None = None
    reason: str = ""


@dataclass
class CommandResult:
    ok: bool
    detail: str


class DeviceModel:
    """Common behaviour: seq counter, device clock, heartbeat interval, battery drain, noise, ramps."""

    kind: DeviceKind = DeviceKind.GATEWAY

    def __init__(
        self,
        device_id: str,
        *,
        seed: int = 0,
        interval_s: float = 60.0,
        battery: bool = False,
        battery_pct: float = 100.0,
        drain_pct_per_day: float = 0.0,
        clock_offset_s: float = 0.0,
        ts_style: str = "epoch_ms",
        start_seq: int = 0,
    ) -> None:
        self.device_id = device_id
        # A per-device stream derived from the seed: the same seed gives the same readings whatever else runs.
        self.rng = random.Random(f"{seed}:{device_id}")  # noqa: S311 - simulation, not crypto
        self.interval_s = interval_s
        self.battery = battery
        self.battery_pct = battery_pct
        self.drain_pct_per_day = drain_pct_per_day
        self.clock_offset_s = clock_offset_s
        self.ts_style = ts_style
        self.seq = start_seq
        self.env = Environment()
        self.ramps: dict[str, Ramp] = {}
        self.drift_per_h: dict[str, float] = {}
        self.drift: dict[str, float] = {}
        self.flaps: dict[str, tuple[float, float, float, float]] = {}  # name -> (low, high, period, start)
        self.last_t: float | None = None
        self.dead = False
        self.pending_flags: dict[str, Any] = {}

    # --- scenario controls -------------------------------------------------------------------------
    def set_env(self, t: float, **values: float) -> None:
        """Set environment values now (a step change)."""
        for name, value in values.items():
            self.ramps.pop(name, None)
            self.flaps.pop(name, None)
            setattr(self.env, name, float(value))
        self._touch(t)

    def ramp_env(self, t: float, over_s: float, **targets: float) -> None:
        """Change environment values linearly to targets over over_s seconds of event time."""
        for name, target in targets.items():
            current = self._env_value(name, t)
            self.flaps.pop(name, None)
            self.ramps[name] = Ramp(name, t, t + over_s, current, float(target))

    def flap_env(self, t: float, name: str, low: float, high: float, period_s: float) -> None:
        """A square wave between low and high (a value hovering across a threshold)."""
        self.ramps.pop(name, None)
        self.flaps[name] = (low, high, period_s, t)

    def set_drift(self, name: str, per_hour: float) -> None:
        """Sensor drift: the reported value moves away from the truth by per_hour each hour."""
        self.drift_per_h[name] = per_hour

    def _env_value(self, name: str, t: float) -> float:
        flap = self.flaps.get(name)
        if flap is not None:
            low, high, period, start = flap
            return high if ((t - start) % period) < period / 2 else low
        ramp = self.ramps.get(name)
        return ramp.value_at(t) if ramp is not None else float(getattr(self.env, name))

    def _touch(self, t: float) -> None:
        """Advance internal state (battery, drift, ramps) to event time t."""
        if self.last_t is not None and t > self.last_t:
            hours = (t - self.last_t) / 3600
            if self.battery and self.drain_pct_per_day:
                self.battery_pct = max(0.0, self.battery_pct - self.drain_pct_per_day * hours / 24)
            for name, rate in self.drift_per_h.items():
                self.drift[name] = self.drift.get(name, 0.0) + rate * hours
        for name, ramp in list(self.ramps.items()):
            setattr(self.env, name, ramp.value_at(t))
            if t >= ramp.end_t:
                del self.ramps[name]
        if self.last_t is None or t > self.last_t:
            self.last_t = t

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)

    # --- output -------------------------------------------------------------------------------------
    def measure(self, t: float) -> dict[str, Any]:  # noqa: ARG002 - kinds that need t use it
        """The kind-specific fields at event time t (state already advanced)."""
        return {}

    def reading(self, t: float) -> dict[str, Any] | None:
        """The native telemetry object this device publishes at event time t, or None if it is dead."""
        self._touch(t)
        if self.dead:
            return None
        fields = self.measure(t)
        fields.update(self.pending_flags)
        self.pending_flags.clear()
        if self.battery:
            fields["battery_pct"] = round(self.battery_pct, 1)
            if self.battery_pct <= 0:
                self.dead = True  # this was its last breath
        out: dict[str, Any] = {"ts": format_ts(t + self.clock_offset_s, self.ts_style), "seq": self.seq}
        out.update(fields)
        self.seq += 1
        return out

    def handle_command(self, t: float, command: Command) -> CommandResult:  # noqa: ARG002
        """Apply a server command; the answer goes to cmd/ack."""
        return CommandResult(False, f"{self.kind.value} does not support {command.action}")


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


class GasDetector(DeviceModel):
    """Catalytic/semiconductor combustible gas detector, optionally wired to a shut-off valve.

    The sensor lags the true concentration (first-order, t63 ~ 20 s), adds noise and drift, and raises
    its own alarm flag at its set point (25 %LEL, GB/T 50493 level 1). With a valve, `close_valve` closes
    it; the next reading says so, and a closed valve stops the leak source (the gas then disperses).
    """

    kind = DeviceKind.GAS_DETECTOR

    def __init__(
        self, device_id: str, *, valve: bool = False, alarm_at: float = 25.0, response_s: float = 20.0, **kw: Any
    ) -> None:
        kw.setdefault("interval_s", 30.0)
        super().__init__(device_id, **kw)
        self.response_s = response_s
        self.valve: str | None = "open" if valve else None
        self.alarm_at = alarm_at
        self.sensed = 0.0
        self.report_flag = True
        self.sensor_t: float | None = None

    def measure(self, t: float) -> dict[str, Any]:
        true = self._env_value("gas_lel", t)
        dt = 0.0 if self.sensor_t is None else max(0.0, t - self.sensor_t)
        self.sensor_t = t
        instant = self.response_s <= 0 or (dt == 0 and self.sensed == 0)
        alpha = 1.0 if instant else 1 - math.exp(-dt / self.response_s)
        self.sensed += (true - self.sensed) * alpha
        value = _clamp(self.sensed + self.drift.get("gas_lel", 0.0) + self.noise(0.2), 0.0, 100.0)
        out: dict[str, Any] = {"gas_lel": round(value, 1), "temp_c": round(self.env.temp_c + self.noise(0.2), 1)}
        if self.report_flag:
            out["gas"] = value >= self.alarm_at
        if self.valve is not None:
            out["valve"] = self.valve
        return out

    def handle_command(self, t: float, command: Command) -> CommandResult:
        if command.action == "close_valve":
            if self.valve is None:
                return CommandResult(False, "no valve fitted")
            self.valve = "closed"
            # The source is cut: what is in the room disperses over ~10 minutes.
            self.ramp_env(t, 600, gas_lel=0.0)
            return CommandResult(True, "valve closed")
        if command.action == "self_test":
            self.pending_flags["test"] = True
            return CommandResult(True, "self-test started")
        return super().handle_command(t, command)


class CoAlarm(DeviceModel):
    """Electrochemical CO alarm (battery): ppm with noise, slow response, battery drain."""

    kind = DeviceKind.CO_ALARM

    def __init__(self, device_id: str, **kw: Any) -> None:
        kw.setdefault("interval_s", 60.0)
        kw.setdefault("battery", True)
        kw.setdefault("battery_pct", 90.0)
        kw.setdefault("drain_pct_per_day", 0.03)  # ~ 10-year sealed lithium cell
        super().__init__(device_id, **kw)
        self.sensed = 0.0
        self.sensor_t: float | None = None
        self.above_s: dict[float, float] = {}
        self.alarming = False

    def measure(self, t: float) -> dict[str, Any]:
        true = self._env_value("co_ppm", t)
        dt = 0.0 if self.sensor_t is None else max(0.0, t - self.sensor_t)
        self.sensor_t = t
        alpha = 1.0 if self.sensed == 0 and dt == 0 else 1 - math.exp(-dt / 45.0)
        self.sensed += (true - self.sensed) * alpha
        value = max(0.0, self.sensed + self.drift.get("co_ppm", 0.0) + self.noise(1.0))
        self._alarm_logic(value, dt)
        # `co` is the alarm's own certified alarm output (Tuya cobj co_status; CO-01 keys on it).
        return {"co_ppm": round(value, 1), "co": self.alarming, "temp_c": round(self.env.temp_c + self.noise(0.2), 1)}

    # EN 50291-1 response windows (RULES-REFERENCE 2.1): 50 ppm alarms within 60-90 min, 100 ppm within
    # 10-40 min, 300 ppm within 3 min; 30 ppm never within 120 min. The alarm sounds when a level has been
    # exceeded for the time below (the middle of each window), and stops once CO falls under 30 ppm.
    WINDOWS = ((300.0, 120.0), (100.0, 25 * 60.0), (50.0, 75 * 60.0))

    def _alarm_logic(self, ppm: float, dt: float) -> None:
        for level, _after in self.WINDOWS:
            # 5 % measurement tolerance: a certified alarm must respond at the stated test concentration;
            # a dip below it winds the timer back (twice as fast) rather than resetting it on one noisy sample
            held = self.above_s.get(level, 0.0)
            self.above_s[level] = held + dt if ppm >= 0.95 * level else max(0.0, held - 2 * dt)
        if any(self.above_s.get(level, 0.0) >= after for level, after in self.WINDOWS):
            self.alarming = True
        elif ppm < 30:
            self.alarming = False

    def handle_command(self, t: float, command: Command) -> CommandResult:
        if command.action in ("self_test", "silence"):
            if command.action == "self_test":
                self.pending_flags["test"] = True
            return CommandResult(True, f"{command.action} done")
        return super().handle_command(t, command)


class SmokeDetector(DeviceModel):
    """Photoelectric smoke alarm (battery): obscuration, its own alarm flag, self-test, tamper, battery."""

    kind = DeviceKind.SMOKE_DETECTOR

    def __init__(self, device_id: str, *, alarm_at_db_m: float = 0.15, **kw: Any) -> None:
        kw.setdefault("interval_s", 300.0)
        kw.setdefault("battery", True)
        kw.setdefault("battery_pct", 95.0)
        kw.setdefault("drain_pct_per_day", 0.03)
        super().__init__(device_id, **kw)
        # GB 4715 response thresholds lie in 0.05-0.3 dB/m; 0.15 is a typical factory setting.
        self.alarm_at_db_m = alarm_at_db_m
        self.tamper = False

    def measure(self, t: float) -> dict[str, Any]:
        obscuration = max(0.0, self._env_value("smoke_db_m", t) + self.drift.get("smoke_db_m", 0.0) + self.noise(0.003))
        return {
            "smoke": obscuration >= self.alarm_at_db_m,
            "smoke_db_m": round(obscuration, 3),
            "temp_c": round(self._env_value("temp_c", t) + self.noise(0.2), 1),
            "tamper": self.tamper,
        }

    def start_self_test(self) -> None:
        """The button press: the next report carries test=true (never pages, DESIGN)."""
        self.pending_flags["test"] = True

    def handle_command(self, t: float, command: Command) -> CommandResult:
        if command.action == "self_test":
            self.start_self_test()
            return CommandResult(True, "self-test started")
        if command.action == "silence":
            return CommandResult(True, "silenced")
        return super().handle_command(t, command)


@dataclass
class Pack:
    """An e-bike battery pack on charge (defaults: 48 V 20 Ah lithium, about 0.96 kWh, RULES-REFERENCE 4.2)."""

    capacity_wh: float = 960.0
    soc: float = 0.2
    bulk_w: float = 150.0  # CC-phase input power: 2.5 A into 54.6 V at ~85 % efficiency
    cv_from_soc: float = 0.8  # the charger reaches its CV set point at about 80 % state of charge
    tau_cv_s: float = 2400.0  # CV current decays exponentially
    full_w: float = 8.0  # charger terminates when input falls below this
    fault: str | None = None  # None | "no_cutoff" | "thermal_runaway"


class ChargingPort(DeviceModel):
    """A metered charging-station port (or smart socket) with a relay, feeding an e-bike charger.

    Power follows a CC/CV charge: constant power in the bulk phase while the state of charge rises,
    then an exponential taper in CV until the charger cuts off (a few watts of standby). Faults:
    `no_cutoff` (charger never tapers: the "no taper" signature, RULES-REFERENCE 4.4) and
    `thermal_runaway` (after taper, power re-rises and temperature climbs). The relay obeys `cut_power`
    and `restore_power`; with the relay off the port draws nothing.
    """

    kind = DeviceKind.CHARGING_PORT

    def __init__(self, device_id: str, *, mains_v: float = 220.0, **kw: Any) -> None:
        kw.setdefault("interval_s", 60.0)
        super().__init__(device_id, **kw)
        self.mains_v = mains_v
        self.relay = "on"
        self.pack: Pack | None = None
        self.energy_wh = 0.0
        self.power_w = 0.0
        self.temp_c = self.env.temp_c
        self.phase = "idle"
        self.cv_started: float | None = None
        self.full_at: float | None = None
        self.runaway_from: float | None = None
        self.sim_t: float | None = None

    def plug(self, t: float, pack: Pack) -> None:
        """A bike is plugged in now."""
        self._advance(t)
        self.pack = pack
        self.phase = "bulk" if pack.soc < pack.cv_from_soc else "cv"
        self.cv_started = t if self.phase == "cv" else None

    def unplug(self, t: float) -> None:
        self._advance(t)
        self.pack = None
        self.phase = "idle"

    def _target_power(self, t: float) -> float:
        pack = self.pack
        if pack is None or self.relay == "off":
            return 0.0
        if self.phase == "bulk":
            return pack.bulk_w
        if self.phase == "cv":
            cv_started = self.cv_started if self.cv_started is not None else t
            if pack.fault == "no_cutoff":
                return pack.bulk_w * 0.95  # never tapers: shorted cell or a failing charger
            p = pack.bulk_w * math.exp(-(t - cv_started) / pack.tau_cv_s)
            if pack.fault == "thermal_runaway" and self.runaway_from is not None and t >= self.runaway_from:
                # VRLA/BMS runaway signature: current rises again during CV (RULES-REFERENCE 4.4).
                p = min(pack.bulk_w * 1.6, p + pack.bulk_w * (t - self.runaway_from) / 900)
            return p
        if self.phase == "full":
            return 1.5  # charger standby
        return 0.0

    def _advance(self, t: float) -> None:
        """Integrate energy, state of charge and temperature from the last step to t (1-minute steps)."""
        if self.sim_t is None:
            self.sim_t = t
            return
        while self.sim_t < t:
            step = min(60.0, t - self.sim_t)
            now = self.sim_t + step
            p = self._target_power(now)
            pack = self.pack
            if pack is not None and self.relay == "on":
                pack.soc = min(1.0, pack.soc + p * 0.85 * step / 3600 / pack.capacity_wh)
                if self.phase == "bulk" and pack.soc >= pack.cv_from_soc:
                    self.phase, self.cv_started = "cv", now
                if self.phase == "cv" and p < pack.full_w and pack.fault != "no_cutoff":
                    if pack.fault == "thermal_runaway" and self.runaway_from is None:
                        # the BMS fails to end the charge: power starts to climb 20 minutes after taper
                        self.runaway_from = now + 1200
                    elif pack.fault != "thermal_runaway":
                        self.phase, self.full_at = "full", now
            self.energy_wh += p * step / 3600
            self.power_w = p
            # Charger/plug temperature: ambient plus a rise proportional to power, lagging ~10 minutes.
            target_temp = self._env_value("temp_c", now) + 0.06 * p
            if self.runaway_from is not None and now >= self.runaway_from:
                target_temp += 4.0 * (now - self.runaway_from) / 60  # cell venting heats the pack fast
            self.temp_c += (target_temp - self.temp_c) * (1 - math.exp(-step / 600))
            self.sim_t = now

    def measure(self, t: float) -> dict[str, Any]:
        self._advance(t)
        p = max(0.0, self.power_w + (self.noise(1.5) if self.power_w > 5 else 0.0))
        volts = self.mains_v + self.noise(1.0)
        return {
            "power_w": round(p, 1),
            "current_a": round(p / volts / 0.95, 3) if p else 0.0,
            "voltage_v": round(volts, 1),
            "energy_wh": round(self.energy_wh, 1),
            "temp_c": round(min(200.0, self.temp_c + self.noise(0.2)), 1),
            "relay": self.relay,
        }

    def handle_command(self, t: float, command: Command) -> CommandResult:
        if command.action == "cut_power":
            self._advance(t)
            self.relay = "off"
            return CommandResult(True, "relay off")
        if command.action == "restore_power":
            self._advance(t)
            self.relay = "on"
            return CommandResult(True, "relay on")
        return super().handle_command(t, command)


class SmartSocket(ChargingPort):
    """A metered smart plug: the same electrical model, registered as a smart_socket."""

    kind = DeviceKind.SMART_SOCKET


class Gateway(DeviceModel):
    """A LoRa/Zigbee/NB gateway: heartbeats (uptime, child count); may buffer its children's messages."""

    kind = DeviceKind.GATEWAY

    def __init__(self, device_id: str, **kw: Any) -> None:
        kw.setdefault("interval_s", 300.0)
        super().__init__(device_id, **kw)
        self.started: float | None = None
        self.children = 0

    def measure(self, t: float) -> dict[str, Any]:
        if self.started is None:
            self.started = t
        return {
            "temp_c": round(self._env_value("temp_c", t) + 8 + self.noise(0.3), 1),
            "uptime_s": int(t - self.started),
            "children": self.children,
        }


class GasValve(DeviceModel):
    """A standalone motorised shut-off valve: reports its state, closes on `close_valve`, never reopens
    remotely (GB 50028 10.8.4: auto-close, manual on-site reopen)."""

    kind = DeviceKind.GAS_VALVE

    def __init__(self, device_id: str, **kw: Any) -> None:
        kw.setdefault("interval_s", 300.0)
        super().__init__(device_id, **kw)
        self.valve = "open"

    def measure(self, t: float) -> dict[str, Any]:  # noqa: ARG002
        return {"valve": self.valve}

    def handle_command(self, t: float, command: Command) -> CommandResult:
        if command.action == "close_valve":
            self.valve = "closed"
            return CommandResult(True, "valve closed")
        return super().handle_command(t, command)


MODELS: dict[DeviceKind, type[DeviceModel]] = {
    DeviceKind.GAS_DETECTOR: GasDetector,
    DeviceKind.CO_ALARM: CoAlarm,
    DeviceKind.SMOKE_DETECTOR: SmokeDetector,
    DeviceKind.CHARGING_PORT: ChargingPort,
    DeviceKind.SMART_SOCKET: SmartSocket,
    DeviceKind.GATEWAY: Gateway,
    DeviceKind.GAS_VALVE: GasValve,
}


def make_model(kind: DeviceKind | str, device_id: str, **kw: Any) -> DeviceModel:
    """A model for a registry device kind."""
    return MODELS[DeviceKind(kind)](device_id, **kw)


@dataclass
class Quiet:
    """Background behaviour for fleets: a normal day in a normal home (for a device with no scenario)."""

    kind: DeviceKind
    params: dict[str, Any] = field(default_factory=dict)


def normal_life(model: DeviceModel, t: float) -> None:
    """Give an idle fleet device a plausible everyday environment at event time t (no alarms)."""
    rng = model.rng
    if isinstance(model, GasDetector):
        model.env.gas_lel = max(0.0, rng.gauss(0.3, 0.2))
    elif isinstance(model, CoAlarm):
        model.env.co_ppm = max(0.0, rng.gauss(2.0, 1.0))
    elif isinstance(model, ChargingPort) and model.pack is None and rng.random() < 0.02:
        model.plug(t, Pack(soc=rng.uniform(0.1, 0.6), bulk_w=rng.uniform(110, 220)))
