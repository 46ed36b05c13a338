-- Outbox: rules (and the API) write one row per alarm transition worth telling people about, in the
-- same transaction as the transition; notify expands it into per-recipient notifications.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    alarm_id    bigint NOT NULL REFERENCES alarm (id),
    event_id    bigint REFERENCES alarm_event (id),
    kind        text NOT NULL,
    severity    smallint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    routed_at   timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE routed_at IS NULL;

-- One row per (transition, recipient): the unique key makes delivery exactly-once per recipient.
CREATE TABLE notification (
    id               bigserial PRIMARY KEY,
    outbox_id        bigint NOT NULL REFERENCES outbox (id),
    alarm_id         bigint NOT NULL REFERENCES alarm (id),
    worker_id        text REFERENCES worker (id),
    merchant_id      text REFERENCES merchant (id),
    step             integer NOT NULL DEFAULT 0,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed', 'suppressed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    title            text NOT NULL DEFAULT '',
    body             text NOT NULL DEFAULT '',
    last_error       text,
    CHECK (num_nonnulls(worker_id, merchant_id) = 1)
);
CREATE UNIQUE INDEX notification_once_worker ON notification (outbox_id, worker_id) WHERE worker_id IS NOT NULL;
CREATE UNIQUE INDEX notification_once_merchant ON notification (outbox_id, merchant_id) WHERE merchant_id IS NOT NULL;
CREATE INDEX notification_due ON notification (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notification_alarm ON notification (alarm_id);

-- Every delivery attempt, per channel, with apprise's answer.
CREATE TABLE delivery_attempt (
    id               bigserial PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES notification (id),
    at               timestamptz NOT NULL DEFAULT now(),
    channel          text NOT NULL,    -- the apprise URL with secrets masked
    ok               boolean NOT NULL,
    detail           text NOT NULL DEFAULT ''
);
CREATE INDEX delivery_attempt_notification ON delivery_attempt (notification_id);
