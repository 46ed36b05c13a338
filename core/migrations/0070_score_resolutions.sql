-- The score stage finds verified hazards to score by their resolution time (score.repo.list_unscored_resolved_alarms,
-- run on every NOTIFY gridwatch_alarm_resolved and in every tick): only real_hazard resolutions are indexed.
CREATE INDEX alarm_resolved_real_hazard ON alarm (closed_at) WHERE disposition = 'real_hazard';
