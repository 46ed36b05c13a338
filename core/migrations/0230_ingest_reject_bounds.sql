-- Issue 23: a reject keeps a bounded excerpt of its payload (GRIDWATCH_REJECT_EXCERPT_BYTES) and the size the
-- message had; the ingest deletes rejects past their retention (GRIDWATCH_REJECT_RETENTION_DAYS) and beyond a
-- row budget (GRIDWATCH_REJECT_MAX_ROWS). Rows stored before keep their payload whole and no size.
ALTER TABLE ingest_reject ADD COLUMN payload_bytes integer;
