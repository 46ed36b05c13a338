-- Rules stage (issue 3): commands sent to devices (valve close, port cut) with their confirmation, and
-- e-bike port lockouts after a safety trip (RULES-REFERENCE EB-10: cleared only by a worker on site).
CREATE TABLE command (
    id            text PRIMARY KEY,              -- uuid, also the id on the wire (gw/v1/{device}/cmd)
    device_id     text NOT NULL REFERENCES device (id),
    action        text NOT NULL CHECK (action IN ('close_valve', 'cut_power', 'restore_power', 'self_test',
                                                  'silence')),
    alarm_id      bigint REFERENCES alarm (id),
    reason        text NOT NULL DEFAULT '',
    requested_by  text,                          -- null: automatic (a rule)
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sent', 'confirmed', 'failed', 'refused')),
    created_at    timestamptz NOT NULL,
    deadline_at   timestamptz NOT NULL,          -- no confirmation by then -> actuation_failed (critical)
    sent_at       timestamptz,
    done_at       timestamptz,
    confirmed_by  text,                          -- 'ack' | 'reading'
    detail        text NOT NULL DEFAULT ''
);
CREATE INDEX command_open ON command (deadline_at) WHERE status IN ('pending', 'sent');
CREATE INDEX command_pending ON command (created_at) WHERE status = 'pending';
CREATE INDEX command_device_open ON command (device_id) WHERE status IN ('pending', 'sent');
CREATE INDEX command_alarm ON command (alarm_id);

CREATE TABLE port_lock (
    id          bigserial PRIMARY KEY,
    device_id   text NOT NULL REFERENCES device (id),
    alarm_id    bigint REFERENCES alarm (id),
    reason      text NOT NULL DEFAULT '',
    locked_at   timestamptz NOT NULL,
    cleared_at  timestamptz,
    cleared_by  text,
    note        text
);
CREATE UNIQUE INDEX port_lock_active ON port_lock (device_id) WHERE cleared_at IS NULL;
CREATE INDEX alarm_site_open ON alarm (site_id, type) WHERE closed_at IS NULL AND active;
