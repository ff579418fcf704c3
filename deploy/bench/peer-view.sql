SELECT r.sampled_at, so.source_id AS station_id, s.msg_id, p.point_id, m.symbol AS metal,
       r.value_mgkg AS value_mg_kg, r.level IN (1, 2) AS exceeds
FROM {schema}.readings r
LEFT JOIN {schema}.samples s ON s.sample_key = r.sample_key
LEFT JOIN {schema}.sources so ON so.source_key = s.source_key
LEFT JOIN {schema}.points p ON p.point_key = r.point_key
LEFT JOIN {schema}.metals m ON m.metal = r.metal
