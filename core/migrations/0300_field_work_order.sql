-- The work on foot (issue 21, docs/field.md): hazard work orders (隐患整改单) for any site and any responsible
-- party, their photos, their history and the notices they send. Written only by the field stage (field/repo.py).

CREATE TABLE work_order (
    id              bigserial PRIMARY KEY,
    site_id         text NOT NULL REFERENCES site (id),
    party           text NOT NULL CHECK (party IN ('merchant', 'landlord', 'household', 'community')),
    party_name      text NOT NULL DEFAULT '',
    party_phone     text NOT NULL DEFAULT '',
    merchant_id     text REFERENCES merchant (id),        -- party = merchant: the site's merchant when opened
    kind            text NOT NULL,                          -- a check-list item, or 'other' (free text)
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    note            text NOT NULL DEFAULT '',
    severity        smallint NOT NULL CHECK (severity BETWEEN 1 AND 4),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'fixed', 'closed')),
    source          text NOT NULL DEFAULT 'inspection' CHECK (source IN ('inspection', 'patrol', 'resident')),
    opened_at       timestamptz NOT NULL,
    opened_by       text NOT NULL,
    due_at          timestamptz NOT NULL,
    fixed_at        timestamptz,
    fixed_by        text,
    closed_at       timestamptz,
    closed_by       text,
    reinspections   integer NOT NULL DEFAULT 0,
    escalation      smallint NOT NULL DEFAULT 0,            -- steps of the overdue ladder reached
    finding_id      bigint REFERENCES score_finding (id),   -- the score finding a merchant's order feeds
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (due_at > opened_at),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK (party <> 'merchant' OR merchant_id IS NOT NULL)
);
CREATE INDEX work_order_site ON work_order (site_id, id DESC);
CREATE INDEX work_order_open_due ON work_order (due_at) WHERE status <> 'closed';

-- Every step of an order: opened, photo, fixed, reinspected (pass / fail with the new deadline), escalated.
CREATE TABLE work_order_event (
    id             bigserial PRIMARY KEY,
    work_order_id  bigint NOT NULL REFERENCES work_order (id),
    at             timestamptz NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('opened', 'photo', 'fixed', 'reinspected', 'escalated', 'notified')),
    actor          text,
    passed         boolean,
    note           text NOT NULL DEFAULT '',
    due_at         timestamptz,
    details        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX work_order_event_order ON work_order_event (work_order_id, id);

-- Photos are kept in the database under a random key (128 bits): no file path, nothing static, every read goes
-- through a route that checks the caller's scope on the order's site. Only sniffed JPEG / PNG / WebP are stored.
CREATE TABLE field_photo (
    id             text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    work_order_id  bigint REFERENCES work_order (id),
    content_type   text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    size           integer NOT NULL CHECK (size > 0),
    width          integer NOT NULL,
    height         integer NOT NULL,
    sha256         text NOT NULL,
    data           bytea NOT NULL,
    stage          text NOT NULL CHECK (stage IN ('found', 'fixed', 'reinspection', 'checkin', 'resident')),
    uploaded_by    text NOT NULL,
    uploaded_at    timestamptz NOT NULL
);
CREATE INDEX field_photo_order ON field_photo (work_order_id, uploaded_at);

-- Messages about orders (the party told, overdue escalation), delivered by the field part through apprise.
CREATE TABLE field_notice (
    id             bigserial PRIMARY KEY,
    work_order_id  bigint NOT NULL REFERENCES work_order (id),
    step           smallint NOT NULL,                    -- 0: opened (party told); 1..: escalation step
    worker_id      text REFERENCES worker (id),
    merchant_id    text REFERENCES merchant (id),
    title          text NOT NULL,
    body           text NOT NULL,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    sent_at        timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(worker_id, merchant_id) = 1)
);
CREATE UNIQUE INDEX field_notice_once_worker ON field_notice (work_order_id, step, worker_id) WHERE worker_id IS NOT NULL;
CREATE UNIQUE INDEX field_notice_once_merchant ON field_notice (work_order_id, step, merchant_id)
    WHERE merchant_id IS NOT NULL;
CREATE INDEX field_notice_due ON field_notice (next_attempt_at) WHERE status = 'pending';
