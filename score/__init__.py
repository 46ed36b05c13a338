"""The merchant safety score (托管、积分): a ledger per merchant fed by verified hazards (alarms resolved real_hazard,
consumed from the database as notify consumes the outbox), field findings, corrections and the periodic tick."""
