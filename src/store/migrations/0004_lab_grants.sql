-- The service role may record lab batches and their rows (rows are never updated; a batch's
-- status and report are).
GRANT SELECT, INSERT, UPDATE ON lab_batches TO soilmon_service;
GRANT SELECT, INSERT ON lab_rows TO soilmon_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO soilmon_service;
