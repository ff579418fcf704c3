-- soilmon schema, version 26: a counter that tells a batch writer whether anyone else has
-- applied readings to the incident tracks since its own last commit.
--
-- Every writer of the incident tracks (station batches, lab uploads) takes the incident
-- advisory lock and then draws the next value of this sequence, in the same transaction. A
-- station writer keeps the tracks it committed in memory with the value it drew; when its
-- next batch draws exactly the value after it, nobody else has held the lock in between (a
-- rolled-back writer still used up a value), so the kept tracks are the committed state and
-- the batch reads from the database only the pairs it has not seen. Any other value, and
-- the writer reads every pair of the batch again, as before this version (store::incidents).
CREATE SEQUENCE incident_epoch;
COMMENT ON SEQUENCE incident_epoch IS
    'Drawn by every writer of the incident tracks under the incident lock (store::incidents).';
GRANT USAGE, SELECT ON SEQUENCE incident_epoch TO soilmon_service;
