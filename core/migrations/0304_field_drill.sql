-- Surprise drills (网格赶考, issue 21): a marked drill event dispatched to the workers of a micro-grid, and the
-- times they acknowledged and arrived. Drills are never alarms: they cannot count in hazard KPIs, "days without a
-- real hazard" or any score. Written only by the field stage.
CREATE TABLE drill (
    id             bigserial PRIMARY KEY,
    micro_grid_id  text NOT NULL REFERENCES micro_grid (id),
    site_id        text NOT NULL REFERENCES site (id),
    scenario       text NOT NULL CHECK (length(scenario) BETWEEN 1 AND 500),
    dispatched_at  timestamptz NOT NULL,
    dispatched_by  text NOT NULL,
    ends_at        timestamptz NOT NULL,
    CHECK (ends_at > dispatched_at)
);
CREATE INDEX drill_mg ON drill (micro_grid_id, dispatched_at DESC);

CREATE TABLE drill_response (
    drill_id         bigint NOT NULL REFERENCES drill (id),
    worker_id        text NOT NULL REFERENCES worker (id),
    acknowledged_at  timestamptz,
    arrived_at       timestamptz,
    PRIMARY KEY (drill_id, worker_id)
);

ALTER TABLE field_notice ADD COLUMN drill_id bigint REFERENCES drill (id);
ALTER TABLE field_notice DROP CONSTRAINT field_notice_subject;
ALTER TABLE field_notice ADD CONSTRAINT field_notice_subject
    CHECK (num_nonnulls(work_order_id, resident_report_id, drill_id) = 1);
CREATE UNIQUE INDEX field_notice_drill_once ON field_notice (drill_id, worker_id) WHERE drill_id IS NOT NULL;
