-- Issue 18: in an alarm storm the most severe transitions are routed first and immediate (life-safety) messages
-- are delivered first, whatever queued ahead of them (notify.repo CLAIM_OUTBOX, CLAIM_DUE).
CREATE INDEX outbox_pending_priority ON outbox (severity DESC, id) WHERE routed_at IS NULL;
CREATE INDEX notification_due_priority ON notification (immediate DESC, next_attempt_at, id) WHERE status = 'pending';
