-- Resident reports (issue 21, docs/field.md): what a resident reports through a building's QR code, without an
-- account; it reaches the covering micro-grid worker (field_notice, with the same climb when nobody takes it), and
-- the resident follows it and rates the outcome (居民评事) through the receipt they were given. Written only by the
-- field stage.

CREATE TABLE resident_report (
    id             bigserial PRIMARY KEY,
    site_id        text NOT NULL REFERENCES site (id),
    what           text NOT NULL CHECK (length(what) BETWEEN 1 AND 1000),
    place          text NOT NULL DEFAULT '' CHECK (length(place) <= 200),
    phone          text NOT NULL DEFAULT '' CHECK (phone ~ '^[0-9+ -]{0,20}$'),
    client_hash    text NOT NULL,                           -- keyed hash of the sender's address (rate limits only)
    receipt_hash   text NOT NULL UNIQUE,                    -- the resident's receipt, stored hashed
    status         text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'taken', 'closed')),
    created_at     timestamptz NOT NULL,
    taken_at       timestamptz,
    taken_by       text,
    closed_at      timestamptz,
    closed_by      text,
    outcome        text NOT NULL DEFAULT '',
    work_order_id  bigint REFERENCES work_order (id),
    escalation     smallint NOT NULL DEFAULT 0,
    rating         smallint CHECK (rating BETWEEN 1 AND 5),
    rating_note    text NOT NULL DEFAULT '' CHECK (length(rating_note) <= 500),
    rated_at       timestamptz,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK (rating IS NULL OR status = 'closed')
);
CREATE INDEX resident_report_site ON resident_report (site_id, id DESC);
CREATE INDEX resident_report_client ON resident_report (client_hash, created_at);
CREATE INDEX resident_report_new ON resident_report (created_at) WHERE status = 'new';

ALTER TABLE field_photo ADD COLUMN resident_report_id bigint REFERENCES resident_report (id);

-- Notices about a resident report use the same queue as work orders'.
ALTER TABLE field_notice ALTER COLUMN work_order_id DROP NOT NULL;
ALTER TABLE field_notice ADD COLUMN resident_report_id bigint REFERENCES resident_report (id);
ALTER TABLE field_notice ADD CONSTRAINT field_notice_subject CHECK (num_nonnulls(work_order_id, resident_report_id) = 1);
CREATE UNIQUE INDEX field_notice_report_once ON field_notice (resident_report_id, step, worker_id)
    WHERE resident_report_id IS NOT NULL;
