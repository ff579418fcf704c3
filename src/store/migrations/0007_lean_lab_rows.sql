-- soilmon schema, version 7: a lab batch's rows cost one index and no per-row trigger.
--
-- lab_rows had a primary key (batch_id, sample_id, metal), a second index (sample_id, metal)
-- for the check against rows stored by other batches, and a foreign key to lab_batches,
-- which PostgreSQL checks with one query per inserted row. Binary COPY of 100,000 rows into
-- a table shaped like this took about 550 ms; 295 ms without the foreign key; 230 ms in the
-- shape below (deploy/bench/lab-rows-keys.sh, which measures all of them).
--
-- One primary key (sample_id, metal, batch_id) now keeps a row unique per batch and serves
-- the lookup by (sample_id, metal). Every row must still belong to a stored batch: checked
-- once per statement against the rows it inserted (COPY included), and a batch that has rows
-- can be neither deleted nor renamed.
ALTER TABLE lab_rows DROP CONSTRAINT lab_rows_batch_id_fkey;
ALTER TABLE lab_rows DROP CONSTRAINT lab_rows_pkey;
DROP INDEX lab_rows_sample_metal;
ALTER TABLE lab_rows ADD PRIMARY KEY (sample_id, metal, batch_id);

CREATE FUNCTION lab_rows_have_batch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    SELECT n.batch_id INTO missing
    FROM (SELECT DISTINCT batch_id FROM new_rows) n
    WHERE NOT EXISTS (SELECT 1 FROM lab_batches b WHERE b.batch_id = n.batch_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'lab_rows: batch % is not in lab_batches', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER lab_rows_have_batch AFTER INSERT ON lab_rows
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_rows_have_batch();

CREATE FUNCTION lab_batches_keep_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'DELETE' OR NEW.batch_id IS DISTINCT FROM OLD.batch_id)
       AND EXISTS (SELECT 1 FROM lab_rows WHERE batch_id = OLD.batch_id) THEN
        RAISE EXCEPTION 'lab_batches: batch % has stored rows', OLD.batch_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER lab_batches_keep_rows BEFORE DELETE OR UPDATE OF batch_id ON lab_batches
    FOR EACH ROW EXECUTE FUNCTION lab_batches_keep_rows();
