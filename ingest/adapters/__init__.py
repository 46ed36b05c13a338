"""Bridge adapters (Zigbee2MQTT, Shelly, Tasmota): foreign topics mapped to the native Reading and status,
and server commands mapped back to each bridge's command topic.

Each adapter module's docstring is the reference for its topics, payloads and mapping (docs/adapters.md
has the overview). A device speaks through a bridge when its registry entry says so: `adapter:` and
`foreign_id:` (the Zigbee2MQTT friendly name, the Shelly MQTT id, the Tasmota topic).

Subscriptions are kept tight (a broker shared with other home automation carries much more): see
`topics()`. The bridges' topics can live under a root (`bridge_root`, "" = the bridges' defaults
`zigbee2mqtt/...`, `shellies/...`, `tele/...`), which is how tests isolate themselves on one broker.
"""

from __future__ import annotations

import orjson

from core.domain import Adapter, Device
from ingest.adapters.shelly import Shelly
from ingest.adapters.tasmota import Tasmota
from ingest.adapters.zigbee2mqtt import Zigbee2Mqtt
from ingest.decode import AdapterDecoder

BridgeAdapter = Zigbee2Mqtt | Shelly | Tasmota


def adapters(root: str = "") -> dict[Adapter, BridgeAdapter]:
    """The bridge adapters for a topic root."""
    return {Adapter.ZIGBEE2MQTT: Zigbee2Mqtt(root), Adapter.SHELLY: Shelly(root), Adapter.TASMOTA: Tasmota(root)}


def topics(root: str = "") -> list[str]:
    """Every bridge subscription for a topic root."""
    return [t for adapter in adapters(root).values() for t in adapter.topics()]


def decoders(root: str = "") -> list[AdapterDecoder]:
    """Every bridge decoder for a topic root (each also answers `ignores(topic)` for bookkeeping topics)."""
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
    bridge_root: str = "",
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
