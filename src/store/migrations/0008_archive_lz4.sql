-- soilmon schema, version 8: the archive compresses large raw inputs with lz4.
--
-- A lab batch's file (11.5 MB for 100,000 rows) is stored verbatim in archive.raw, which
-- PostgreSQL compresses when it is large (station messages are too small to be compressed).
-- With the default pglz, appending that file took about 130 ms of a 1.1 s upload in the
-- service's log ("lab batch stored", archive_ms); lz4 compresses several times faster, at a
-- slightly larger size. Values stored before keep their compression; both read back the same
-- bytes, so the hash chain is unchanged. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE archive ALTER COLUMN raw SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this server; archive.raw keeps pglz';
END $$;
