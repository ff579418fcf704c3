-- soilmon schema, version 9: one relation for everything that reads readings with their
-- provenance.
--
-- Readers that want a reading as the API, exports and alerts show it (value, level,
-- thresholds, standard, version, column, sources, land use, pH band, method, depth) read
-- `readings_full`, not the table. Today it is the table itself; a later version that stores
-- what many readings share only once redefines this view over its tables with the same
-- columns, and no reader changes.
CREATE VIEW readings_full AS SELECT * FROM readings;
GRANT SELECT ON readings_full TO soilmon_service;
