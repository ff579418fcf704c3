-- soilmon schema, version 2: lab batch uploads.

-- One row per batch id: the latest outcome. An accepted batch is final (same content again:
-- its report is returned; different content: 409); a rejected one may be corrected and sent
-- again under the same id.
CREATE TABLE lab_batches (
    batch_id       text PRIMARY KEY,
    lab_id         text NOT NULL,
    status         text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    content_sha256 text NOT NULL,
    row_count      integer NOT NULL,
    report         jsonb NOT NULL,
    uploaded_by    text NOT NULL,
    received_at    timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now()
);

-- Every row of an accepted batch, QC rows included, with its QC type. Field samples are also
-- in `readings` (source 'lab', source_id = batch_id, msg_id = sample_id); QC rows never are.
CREATE TABLE lab_rows (
    batch_id        text NOT NULL REFERENCES lab_batches (batch_id),
    line            integer NOT NULL,
    sample_id       text NOT NULL,
    point_id        text,
    sampled_at      timestamptz,
    analysed_at     timestamptz,
    depth_top_cm    double precision,
    depth_bottom_cm double precision,
    ph              double precision,
    metal           text NOT NULL,
    value_orig      double precision NOT NULL,
    unit_orig       text NOT NULL,
    value_mgkg      double precision NOT NULL,
    detected        boolean NOT NULL,
    mdl_mgkg        double precision,
    method          text,
    qc_type         text NOT NULL
        CHECK (qc_type IN ('sample', 'field_duplicate', 'lab_duplicate', 'blank', 'crm', 'spike')),
    qc_ref          text,
    level           text,
    PRIMARY KEY (batch_id, sample_id, metal)
);
CREATE INDEX lab_rows_sample_metal ON lab_rows (sample_id, metal);
