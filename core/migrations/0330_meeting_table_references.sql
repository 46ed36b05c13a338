-- Issue 18: alarm_event and outbox, the tables where rules and notify meet, keep their references to alarm and to
-- the announced event without foreign-key checks. Every writer takes the alarm id from an alarm row it has just
-- locked, inserted or read (nothing deletes an alarm), and the event id from the INSERT ... RETURNING that wrote
-- the event in the same statement or transaction (nothing deletes from alarm_event either). Each check locked the
-- referenced row FOR KEY SHARE: three row locks per transition, on alarms that ingest updates and notify locks at the
-- same time. During an alarm storm they were most of the time of the statement that appends a batch's events, and
-- the gas-leak probes waited behind it (docs/scaling.md). tests/test_rules_batch.py and tests/test_storm_priority.py
-- check the references instead.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_alarm_id_fkey;
ALTER TABLE alarm_event DROP CONSTRAINT IF EXISTS alarm_event_alarm_id_fkey;
