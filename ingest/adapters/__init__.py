"""Bridge adapters (Zigbee2MQTT, Shelly, Tasmota): foreign topics mapped to the native Reading and status."""

from __future__ import annotations

from ingest.decode import AdapterDecoder

# Topics the ingest subscribes to for bridges, and their decoders (filled as adapters are added).
TOPICS: list[str] = []
DECODERS: list[AdapterDecoder] = []
