-- soilmon schema, version 5: less written per accepted station message.
--
-- messages.payload held the payload a second time, as jsonb, next to the archive's verbatim
-- bytes (migration 3), and nothing read it. New messages leave it NULL; the raw message is
-- archive.raw (kind 'station_message', ref '<station>/<msg_id>'). Rows stored before
-- migration 3 keep theirs: they have no archive entry.
ALTER TABLE messages ALTER COLUMN payload DROP NOT NULL;
COMMENT ON COLUMN messages.payload IS
    'Payload of messages stored before schema version 3 only; later ones: archive.raw';

-- archive.created_at grows with seq, so a BRIN index serves `soilmon verify --from` at a
-- fraction of a B-tree's cost per append.
DROP INDEX archive_created;
CREATE INDEX archive_created_brin ON archive USING brin (created_at);

-- entry_hash needs no index: nothing looks an entry up by its hash, and its uniqueness
-- follows from the chain (`soilmon verify` recomputes every hash from the previous one).
ALTER TABLE archive DROP CONSTRAINT archive_entry_hash_key;
