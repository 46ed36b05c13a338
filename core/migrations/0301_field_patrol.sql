-- Patrol rounds (issue 21, docs/field.md): a route of stops (sites, or the households of a building in a gas
-- campaign), each answered with the check-list of its kind of place; failed items become work orders. Written only
-- by the field stage.

CREATE TABLE patrol_round (
    id             bigserial PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('grid', 'gas_campaign', 'adhoc')),
    micro_grid_id  text NOT NULL REFERENCES micro_grid (id),
    title          text NOT NULL,
    due_start      timestamptz NOT NULL,
    due_end        timestamptz NOT NULL,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    schedule_key   text UNIQUE,                       -- scheduled rounds: e.g. grid:mg1:2026-05-01:am (idempotent)
    CHECK (due_end > due_start)
);
CREATE INDEX patrol_round_mg ON patrol_round (micro_grid_id, due_start DESC);
CREATE INDEX patrol_round_due ON patrol_round (due_end);

CREATE TABLE patrol_stop (
    id          bigserial PRIMARY KEY,
    round_id    bigint NOT NULL REFERENCES patrol_round (id),
    seq         integer NOT NULL,
    site_id     text NOT NULL REFERENCES site (id),
    household   text NOT NULL DEFAULT '',             -- a gas campaign's door ('3-201'); '' for the site itself
    checklist   text NOT NULL,                        -- field/checklists.py kind
    visited_at  timestamptz,
    visited_by  text,
    outcome     text CHECK (outcome IN ('checked', 'not_home')),
    answers     jsonb NOT NULL DEFAULT '{}',          -- item code -> 'pass' | 'fail'
    note        text NOT NULL DEFAULT '',
    UNIQUE (round_id, site_id, household),
    CHECK ((visited_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX patrol_stop_round ON patrol_stop (round_id, seq);

ALTER TABLE work_order ADD COLUMN patrol_stop_id bigint REFERENCES patrol_stop (id);
ALTER TABLE field_photo ADD COLUMN patrol_stop_id bigint REFERENCES patrol_stop (id);
