-- Readings in event time. Natural key (device_id, ts, seq) absorbs MQTT redeliveries (QoS 1 is at least once).
-- seq is -1 when the device sends none, so the key stays NOT NULL and ON CONFLICT works.
CREATE TABLE reading (
    device_id    text NOT NULL,
    ts           timestamptz NOT NULL,
    seq          bigint NOT NULL DEFAULT -1,
    received_at  timestamptz NOT NULL,
    gas_lel      real,
    co_ppm       real,
    smoke_db_m   real,
    temp_c       real,
    power_w      real,
    current_a    real,
    voltage_v    real,
    energy_wh    double precision,
    battery_pct  real,
    gas          boolean,
    smoke        boolean,
    tamper       boolean,
    test         boolean,
    relay        text,
    valve        text,
    fault        text,
    extras       jsonb,
    PRIMARY KEY (device_id, ts, seq)
);

-- Messages that could not become readings: kept with the reason, never dropped.
CREATE TABLE ingest_reject (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    device_id    text,
    reason       text NOT NULL
);
CREATE INDEX ingest_reject_received ON ingest_reject (received_at DESC);
CREATE INDEX ingest_reject_device ON ingest_reject (device_id, received_at DESC);
