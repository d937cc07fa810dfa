-- Shared resources. Who uses a resource is part of it: ``in_use_by`` is written by the resource's own
-- compare-and-swap, so two parties changing it at once never overwrite each other. The interests
-- table indexes those uses (party filter, the engine's expiry sweep), written by the same write.
ALTER TABLE resources ADD COLUMN in_use_by TEXT NOT NULL DEFAULT '{}';

ALTER TABLE interests ADD COLUMN client TEXT;

CREATE INDEX interests_expiry ON interests (expires_at);

UPDATE resources SET in_use_by = (
    SELECT json_group_object(party, json_object(
        'client', client, 'registered_at', registered_at, 'expires_at', expires_at))
    FROM interests WHERE interests.resource_id = resources.id
)
WHERE id IN (SELECT resource_id FROM interests);
