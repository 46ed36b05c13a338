-- Issue 22: scheduled reports. One row per schedule and period, so a report is e-mailed once however many
-- notify processes run the schedule; attempts and the last error are kept (a failed delivery is retried, never
-- only logged). Written by report only.
CREATE TABLE report_delivery (
    id          bigserial PRIMARY KEY,
    schedule    text NOT NULL,                 -- the schedule that made it (e.g. monthly:street)
    period      text NOT NULL,                 -- 2026-11, 2026-W45, 2026-11-05
    attempts    integer NOT NULL DEFAULT 0,
    sent_at     timestamptz,
    error       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schedule, period)
);
