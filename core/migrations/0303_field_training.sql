-- Training and drill attendance of a merchant's staff (issue 21, M-R04), recorded by an inspector; the credit it
-- earns (if the policy still allows one) is a score ledger entry written through score.service. Written only by the
-- field stage.
CREATE TABLE training_record (
    id               bigserial PRIMARY KEY,
    merchant_id      text NOT NULL REFERENCES merchant (id),
    kind             text NOT NULL CHECK (kind IN ('training', 'drill')),
    held_at          timestamptz NOT NULL,
    attendees        integer NOT NULL CHECK (attendees BETWEEN 1 AND 500),
    names            text NOT NULL DEFAULT '' CHECK (length(names) <= 2000),
    note             text NOT NULL DEFAULT '' CHECK (length(note) <= 2000),
    recorded_by      text NOT NULL,
    recorded_at      timestamptz NOT NULL,
    ledger_entry_id  bigint REFERENCES score_entry (id),
    no_credit        text NOT NULL DEFAULT ''            -- why no credit was given (cap reached, lock, at base)
);
CREATE INDEX training_record_merchant ON training_record (merchant_id, held_at DESC);
