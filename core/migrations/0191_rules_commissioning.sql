-- Issue 19: commissioning checks. Installing a device is not done until it has proved itself: it reports within a
-- time limit and, for a detector, a test press gives the expected test or alarm signal. Written by rules only
-- (started through rules.commissioning, judged by the rules timer).
CREATE TABLE commissioning (
    id           bigserial PRIMARY KEY,
    device_id    text NOT NULL REFERENCES device (id),
    started_at   timestamptz NOT NULL,
    started_by   text NOT NULL,
    deadline_at  timestamptz NOT NULL,
    needs_test   boolean NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'passed', 'failed', 'cancelled')),
    reported_at  timestamptz,
    tested_at    timestamptz,
    test_signal  text,
    finished_at  timestamptz,
    reason       text NOT NULL DEFAULT ''
);
-- One check in progress per device (a new start cancels the one before).
CREATE UNIQUE INDEX commissioning_pending ON commissioning (device_id) WHERE status = 'pending';
CREATE INDEX commissioning_device ON commissioning (device_id, id DESC);
