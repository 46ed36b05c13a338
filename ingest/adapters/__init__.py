"""Bridge adapters (Zigbee2MQTT, Shelly, Tasmota): foreign topics mapped to the native Reading and status,
and server commands mapped back to each bridge's command topic."""

from __future__ import annotations

import orjson

from core.domain import Adapter, Device
from ingest.decode import AdapterDecoder

# Topics the ingest subscribes to for bridges, and their decoders (filled as adapters are added).
TOPICS: list[str] = []
DECODERS: list[AdapterDecoder] = []


def encode_command(device: Device, *, action: str, command_id: str, alarm_id: int | None, reason: str,
                   prefix: str = "gw/v1") -> list[tuple[str, bytes]]:
    """The (topic, payload) messages that carry a command to this device in its own dialect."""
    if device.adapter is Adapter.NATIVE:
        payload = {"id": command_id, "action": action, "alarm_id": alarm_id, "reason": reason}
        return [(f"{prefix}/{device.id}/cmd", orjson.dumps(payload))]
    raise NotImplementedError(f"commands for adapter {device.adapter} are not implemented yet")
