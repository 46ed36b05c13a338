-- notify: escalation ladder state, silences, grouped (storm-controlled) notifications.
-- Extends 0004 (notification, outbox) with ALTERs only.

-- Rows notify writes itself into the outbox (escalated, reminder, ack_timeout) carry the step or reminder number.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS detail jsonb NOT NULL DEFAULT '{}';

ALTER TABLE notification
    ADD COLUMN kind       text NOT NULL DEFAULT '',         -- the transition: raised, escalated, reminder, ...
    ADD COLUMN tier       text NOT NULL DEFAULT 'worker',   -- worker | merchant | leader | community | fire_station
    ADD COLUMN locale     text NOT NULL DEFAULT 'zh-CN',
    ADD COLUMN site_id    text REFERENCES site (id),
    ADD COLUMN immediate  boolean NOT NULL DEFAULT true,    -- false: may be grouped with others of its site
    ADD COLUMN alarm_ids  bigint[] NOT NULL DEFAULT '{}',   -- alarms this message covers (more than one = grouped)
    ADD COLUMN reason     text;                             -- why suppressed or deferred
UPDATE notification SET alarm_ids = ARRAY[alarm_id] WHERE alarm_ids = '{}';
-- An open group: not yet tried, held for more alarms of the same site and recipient.
CREATE INDEX notification_open_group ON notification (site_id, next_attempt_at)
    WHERE NOT immediate AND status = 'pending' AND attempts = 0;
CREATE INDEX notification_alarm_ids ON notification USING gin (alarm_ids);
-- Routing takes the earliest unrouted row of each alarm first.
CREATE INDEX outbox_pending_alarm ON outbox (alarm_id, id) WHERE routed_at IS NULL;

-- One ladder per alarm: the next step, reminder and re-notification deadlines, evaluated by every notify
-- process with FOR UPDATE SKIP LOCKED.
CREATE TABLE escalation (
    alarm_id          bigint PRIMARY KEY REFERENCES alarm (id),
    severity          smallint NOT NULL,
    start_step        integer NOT NULL DEFAULT 0,
    step              integer NOT NULL DEFAULT 0,       -- the highest step already notified
    started_at        timestamptz NOT NULL,
    next_step_at      timestamptz,
    reminders         integer NOT NULL DEFAULT 0,
    next_reminder_at  timestamptz,
    renotify_at       timestamptz,
    stopped_at        timestamptz,
    stop_reason       text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX escalation_due ON escalation (least(next_step_at, next_reminder_at, renotify_at))
    WHERE stopped_at IS NULL;

-- Maintenance windows: a site or a device, with an expiry. Life-safety alarms stay loud unless
-- include_life_safety says otherwise (explicit override).
CREATE TABLE silence (
    id                   bigserial PRIMARY KEY,
    site_id              text REFERENCES site (id),
    device_id            text REFERENCES device (id),
    starts_at            timestamptz NOT NULL,
    ends_at              timestamptz NOT NULL,
    reason               text NOT NULL DEFAULT '',
    created_by           text,
    include_life_safety  boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(site_id, device_id) = 1),
    CHECK (ends_at > starts_at)
);
CREATE INDEX silence_site ON silence (site_id, ends_at);
CREATE INDEX silence_device ON silence (device_id, ends_at);
