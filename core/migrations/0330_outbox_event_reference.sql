-- Issue 18: outbox.event_id keeps naming the alarm_event its row announces, without a foreign-key check. Both rows
-- are written by one statement (rules.repo APPEND_EVENTS: the event's id comes from the INSERT ... RETURNING that
-- made it) or one after the other in one transaction (notify's own transitions), and alarm_event is append-only
-- (nothing deletes from it). The check locked each just-written event row FOR KEY SHARE; during an alarm storm,
-- with notify writing beside the ingest, it was most of the time of the statement that appends a batch's events,
-- and the gas-leak probes waited behind it (docs/scaling.md). tests/test_rules_batch.py checks the reference.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_fkey;
