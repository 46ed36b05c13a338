-- Issue 23: delivery no longer holds a transaction (and the notification rows' locks) across network I/O. A
-- deliverer claims due notifications by stamping a lease (claimed_until) and commits; it sends with no transaction
-- open, then records the attempts in a second one. Another deliverer skips a notification while its lease lasts;
-- once it has lapsed (the sender died) the notification is due again.
ALTER TABLE notification ADD COLUMN claimed_until timestamptz;
