-- A failed re-inspection restarts an order's overdue ladder at step 0 with a new deadline; its notices were unique
-- per (order, step, recipient), so the second climb queued nothing and told nobody. A notice now also carries the
-- order's re-inspection count when it was queued: once per climb, step and recipient.
ALTER TABLE field_notice ADD COLUMN reinspections integer NOT NULL DEFAULT 0;
DROP INDEX field_notice_once_worker;
DROP INDEX field_notice_once_merchant;
CREATE UNIQUE INDEX field_notice_once_worker ON field_notice (work_order_id, reinspections, step, worker_id)
    WHERE worker_id IS NOT NULL AND work_order_id IS NOT NULL;
CREATE UNIQUE INDEX field_notice_once_merchant ON field_notice (work_order_id, reinspections, step, merchant_id)
    WHERE merchant_id IS NOT NULL AND work_order_id IS NOT NULL;
