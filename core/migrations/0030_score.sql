-- Merchant safety score (DESIGN: "a ledger, not a number"). score_entry is append-only; merchant_score is a
-- snapshot derived from it (recomputable with `gridwatch score recompute`), never edited by hand.

-- Hazards a worker recorded on a site by inspection, with a rectification deadline.
CREATE TABLE score_finding (
    id           bigserial PRIMARY KEY,
    site_id      text NOT NULL REFERENCES site (id),
    merchant_id  text NOT NULL REFERENCES merchant (id),   -- the site's merchant when it was found
    kind         text NOT NULL,                            -- a finding kind of the score policy
    code         text NOT NULL,
    note         text NOT NULL DEFAULT '',
    found_at     timestamptz NOT NULL,
    found_by     text NOT NULL,
    due_at       timestamptz NOT NULL,
    closed_at    timestamptz,
    closed_by    text,
    close_note   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (due_at > found_at),
    CHECK ((closed_at IS NULL) = (closed_by IS NULL))
);
CREATE INDEX score_finding_merchant ON score_finding (merchant_id, id DESC);
CREATE INDEX score_finding_open ON score_finding (due_at) WHERE closed_at IS NULL;

-- The ledger: every change of a merchant's points, with its reason and where it came from.
CREATE TABLE score_entry (
    id            bigserial PRIMARY KEY,
    merchant_id   text NOT NULL REFERENCES merchant (id),
    at            timestamptz NOT NULL,          -- when it took effect (verification, period end, ...)
    points        integer NOT NULL CHECK (points <> 0 AND points BETWEEN -100 AND 100),
    code          text NOT NULL,                 -- policy code (M-D02, M-R01, ...) or ADJ for corrections
    reason        text NOT NULL CHECK (length(reason) > 0),
    alarm_id      bigint REFERENCES alarm (id),
    finding_id    bigint REFERENCES score_finding (id),
    site_id       text REFERENCES site (id),
    actor         text,                          -- who resolved the alarm / recorded the finding / admin
    hazard        boolean NOT NULL DEFAULT false,  -- counts toward the admission-review hazard count
    lock_until    timestamptz,                   -- no restorations before this
    forced_tier   text,
    forced_until  timestamptz,
    corrects_id   bigint REFERENCES score_entry (id),
    dedupe_key    text NOT NULL,                 -- makes every automatic entry idempotent
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (code <> 'ADJ' OR (actor IS NOT NULL AND length(reason) >= 5)),
    CHECK ((forced_tier IS NULL) = (forced_until IS NULL))
);
CREATE UNIQUE INDEX score_entry_dedupe ON score_entry (merchant_id, dedupe_key);
CREATE INDEX score_entry_merchant ON score_entry (merchant_id, at, id);
CREATE INDEX score_entry_alarm ON score_entry (alarm_id) WHERE alarm_id IS NOT NULL;
CREATE INDEX score_entry_finding ON score_entry (finding_id) WHERE finding_id IS NOT NULL;

-- Corrections are new compensating entries; nothing in the ledger is ever changed or removed.
CREATE FUNCTION score_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'score_entry is append-only: add a compensating correction instead of %', TG_OP;
END $$;
CREATE TRIGGER score_entry_append_only BEFORE UPDATE OR DELETE ON score_entry
    FOR EACH ROW EXECUTE FUNCTION score_entry_append_only();

-- Derived from the ledger (rules/score.py derive); refreshed on every ledger write and by the score tick.
CREATE TABLE merchant_score (
    merchant_id     text PRIMARY KEY REFERENCES merchant (id),
    score           integer NOT NULL CHECK (score BETWEEN 0 AND 100),
    tier            text NOT NULL,
    review          boolean NOT NULL,
    review_reasons  text[] NOT NULL DEFAULT '{}',
    hazards         integer NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    forced_tier     text,
    forced_until    timestamptz,
    entries         integer NOT NULL DEFAULT 0,
    last_entry_id   bigint,
    as_of           timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchant_score_tier ON merchant_score (tier, score);
