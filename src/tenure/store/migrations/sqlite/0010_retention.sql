-- Retention (tenure.store.retention): each pruning task walks the journal in the change feed's order
-- and keeps how far it got, as a feed position (32 hexadecimal digits).
CREATE TABLE retention_cursors (
    task     TEXT PRIMARY KEY,
    position TEXT NOT NULL
);

-- A resource's callbacks by resource: pruning deletes them that way, and deleting a resource checks
-- that none refers to it (without an index, each such check reads the whole inbox).
CREATE INDEX inbox_resource ON inbox (resource_id);
