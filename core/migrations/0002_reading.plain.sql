-- Plain PostgreSQL stand-in for the continuous aggregate, so the same queries work on both.
CREATE VIEW reading_hourly AS
SELECT device_id, date_bin(interval '1 hour', ts, timestamptz '2000-01-01') AS bucket,
       count(*) AS n, max(gas_lel) AS gas_lel_max, max(co_ppm) AS co_ppm_max, max(temp_c) AS temp_c_max,
       avg(power_w) AS power_w_avg, max(power_w) AS power_w_max
FROM reading GROUP BY device_id, bucket;
