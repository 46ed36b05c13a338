"""Bridge adapters (Zigbee2MQTT, Shelly, Tasmota, ESPHome): foreign topics mapped to the native Reading, status and
device events, and server commands mapped back to each bridge's command topic.

Each adapter module's docstring is the reference for its topics, payloads and mapping (docs/adapters.md has the
overview). A device speaks through a bridge when its registry entry says so: `adapter:` and `foreign_id:` (the
Zigbee2MQTT friendly name, the Shelly MQTT id, the Tasmota topic, the ESPHome node name).

Subscriptions are kept tight (a broker shared with other home automation carries much more): see `topics()`. The
bridges' topics can live under a root (`bridge_root`, "" = the bridges' defaults `zigbee2mqtt/...`, `shellies/...`,
`tele/...`, `esphome/...`), which is how tests isolate themselves on one broker; Zigbee2MQTT's base topic and
ESPHome's are configurable (GRIDWATCH_ZIGBEE2MQTT_BASE_TOPIC, GRIDWATCH_ESPHOME_BASE_TOPIC).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from core.domain import Adapter, Device
from core.settings import Settings
from ingest.adapters.esphome import Esphome
from ingest.adapters.shelly import Shelly
from ingest.adapters.tasmota import Tasmota
from ingest.adapters.zigbee2mqtt import Zigbee2Mqtt
from ingest.decode import AdapterDecoder

BridgeAdapter = Zigbee2Mqtt | Shelly | Tasmota | Esphome


@dataclass(frozen=True, slots=True)
class Bases:
    """Where the bridges publish: an optional common root and the configurable base topics."""

    root: str = ""
    zigbee2mqtt: str = "zigbee2mqtt"
    esphome: str = "esphome"


def bases(settings: Settings) -> Bases:
    """The bridges' topics as configured."""
    return Bases(
        settings.bridge_topic_root, settings.zigbee2mqtt_base_topic.strip("/"), settings.esphome_base_topic.strip("/")
    )


def _bases(root: str | Bases) -> Bases:
    return root if isinstance(root, Bases) else Bases(root)


def adapters(root: str | Bases = "") -> dict[Adapter, BridgeAdapter]:
    """The bridge adapters for a topic root (or full Bases)."""
    b = _bases(root)
    return {
        Adapter.ZIGBEE2MQTT: Zigbee2Mqtt(b.root, b.zigbee2mqtt),
        Adapter.SHELLY: Shelly(b.root),
        Adapter.TASMOTA: Tasmota(b.root),
        Adapter.ESPHOME: Esphome(b.root, b.esphome),
    }


def topics(root: str | Bases = "") -> list[str]:
    """Every bridge subscription for a topic root."""
    return [t for adapter in adapters(root).values() for t in adapter.topics()]


def device_topics(devices: Iterable[Device], root: str | Bases = "") -> list[str]:
    """Subscriptions only some registered devices need (Zigbee2MQTT friendly names with a '/')."""
    z2m = adapters(root)[Adapter.ZIGBEE2MQTT]
    assert isinstance(z2m, Zigbee2Mqtt)  # noqa: S101 - the table above
    return z2m.device_topics(d.foreign_id for d in devices if d.adapter is Adapter.ZIGBEE2MQTT and d.foreign_id)


def decoders(root: str | Bases = "") -> list[AdapterDecoder]:
    """Every bridge decoder for a topic root (each also answers `ignores(topic)` for bookkeeping topics). ESPHome
    comes last: with an empty base its filters are the broadest."""
    return list(adapters(root).values())


# Topics the ingest subscribes to for bridges, and their decoders, at the bridges' default topics.
TOPICS: list[str] = topics()
DECODERS: list[AdapterDecoder] = decoders()


class CommandNotSupportedError(ValueError):
    """The device's bridge has no way to carry this action."""


def encode_command(
    device: Device,
    *,
    action: str,
    command_id: str,
    alarm_id: int | None,
    reason: str,
    prefix: str = "gw/v1",
    bridge_root: str | Bases = "",
) -> list[tuple[str, bytes]]:
    """The (topic, payload) messages that carry a command to this device in its own dialect.

    Bridges have no command id or ack: the device's next state (relay off, valve closed) confirms it.
    Raises CommandNotSupportedError when the bridge cannot carry the action or the device has no foreign_id.
    """
    if device.adapter is Adapter.NATIVE:
        payload = {"id": command_id, "action": action, "alarm_id": alarm_id, "reason": reason}
        return [(f"{prefix}/{device.id}/cmd", orjson.dumps(payload))]
    if not device.foreign_id:
        raise CommandNotSupportedError(
            f"device {device.id} uses adapter {device.adapter.value} but has no foreign_id "
            "in the registry, so there is no topic to command it on"
        )
    try:
        return adapters(bridge_root)[device.adapter].encode(device, action)
    except ValueError as exc:
        raise CommandNotSupportedError(f"device {device.id}: {exc}") from exc
