-- Issue 19: ESPHome nodes are registered with adapter 'esphome' (the column's CHECK named as PostgreSQL named the
-- inline constraint of 0001_registry.sql).
ALTER TABLE device DROP CONSTRAINT IF EXISTS device_adapter_check;
ALTER TABLE device ADD CONSTRAINT device_adapter_check
    CHECK (adapter IN ('native', 'zigbee2mqtt', 'shelly', 'tasmota', 'esphome'));

-- Issue 19: what a bridge says about a device's place in its network (joined, announced, interviewed, left,
-- removed, restarted). Written by ingest only. The device may not be registered yet (a device joining is named by
-- the bridge's id for it, foreign_id), so device_id is filled only when the registry knows it.
CREATE TABLE device_event (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    adapter      text NOT NULL,
    foreign_id   text NOT NULL,
    device_id    text REFERENCES device (id) ON DELETE SET NULL,
    kind         text NOT NULL CHECK (kind IN ('joined', 'announced', 'interview_started', 'interview_successful',
                                                'interview_failed', 'left', 'removed', 'booted')),
    topic        text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX device_event_device ON device_event (device_id, received_at DESC);
CREATE INDEX device_event_received ON device_event (received_at DESC);
