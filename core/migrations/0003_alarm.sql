-- Per-device rule state, locked FOR UPDATE while a batch is evaluated: this serialises a device's
-- readings across several ingest processes on a shared subscription.
CREATE TABLE device_state (
    device_id     text PRIMARY KEY REFERENCES device (id) ON DELETE CASCADE,
    last_ts       timestamptz,              -- newest reading's event time evaluated
    last_seq      bigint,
    last_seen_at  timestamptz,              -- wall clock of the newest message (absence rules)
    online        boolean,
    status_at     timestamptz,
    rules         jsonb NOT NULL DEFAULT '{}'  -- rule id -> that rule's state
);

CREATE TABLE alarm (
    id               bigserial PRIMARY KEY,
    device_id        text NOT NULL REFERENCES device (id),
    site_id          text NOT NULL REFERENCES site (id),
    micro_grid_id    text NOT NULL REFERENCES micro_grid (id),
    type             text NOT NULL,
    rule_id          text NOT NULL,
    severity         smallint NOT NULL CHECK (severity BETWEEN 1 AND 4),
    active           boolean NOT NULL DEFAULT true,
    acknowledged     boolean NOT NULL DEFAULT false,
    latching         boolean NOT NULL DEFAULT false,
    raised_at        timestamptz NOT NULL,      -- event time of the reading that raised it
    last_seen_at     timestamptz NOT NULL,
    cleared_at       timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    closed_at        timestamptz,
    closed_by        text,
    disposition      text CHECK (disposition IN ('real_hazard', 'false_alarm', 'test', 'device_fault')),
    note             text,
    value            double precision,
    peak_value       double precision,
    count            integer NOT NULL DEFAULT 1,
    message          text NOT NULL DEFAULT '',
    details          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- DESIGN: one open alarm per (device, alarm type); repeats update it, never duplicate it.
CREATE UNIQUE INDEX alarm_open_unique ON alarm (device_id, type) WHERE closed_at IS NULL;
CREATE INDEX alarm_micro_grid_open ON alarm (micro_grid_id, id DESC) WHERE closed_at IS NULL;
CREATE INDEX alarm_site ON alarm (site_id, id DESC);
CREATE INDEX alarm_raised ON alarm (raised_at DESC);

CREATE TABLE alarm_event (
    id        bigserial PRIMARY KEY,
    alarm_id  bigint NOT NULL REFERENCES alarm (id),
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text NOT NULL CHECK (kind IN ('raised', 'escalated', 'severity_raised', 'notified', 'acknowledged',
                                            'cleared', 'reactivated', 'resolved', 'actuated', 'actuation_confirmed',
                                            'actuation_failed', 'updated')),
    actor     text,
    severity  smallint,
    details   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alarm_event_alarm ON alarm_event (alarm_id, id);
