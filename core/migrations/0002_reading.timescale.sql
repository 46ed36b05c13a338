-- Applied only where the timescaledb extension is available (DESIGN: hypertable + policies).
SELECT create_hypertable('reading', 'ts', chunk_time_interval => interval '1 day', migrate_data => true);
ALTER TABLE reading SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                         timescaledb.compress_orderby = 'ts DESC, seq DESC');
SELECT add_compression_policy('reading', interval '7 days');
SELECT add_retention_policy('reading', interval '400 days');

CREATE MATERIALIZED VIEW reading_hourly WITH (timescaledb.continuous) AS
SELECT device_id, time_bucket(interval '1 hour', ts) AS bucket,
       count(*) AS n, max(gas_lel) AS gas_lel_max, max(co_ppm) AS co_ppm_max, max(temp_c) AS temp_c_max,
       avg(power_w) AS power_w_avg, max(power_w) AS power_w_max
FROM reading GROUP BY device_id, bucket WITH NO DATA;
SELECT add_continuous_aggregate_policy('reading_hourly', start_offset => interval '3 days',
                                       end_offset => interval '1 hour', schedule_interval => interval '30 minutes');
