-- The rules timer's escalation pass looks up open alarms by type and age every tick.
CREATE INDEX alarm_open_type ON alarm (type, raised_at) WHERE closed_at IS NULL;
