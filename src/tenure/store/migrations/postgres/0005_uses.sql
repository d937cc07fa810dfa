-- Shared resources. Who uses a resource is part of it: ``in_use_by`` is written by the resource's own
-- compare-and-swap, so two parties changing it at once never overwrite each other. The interests
-- table indexes those uses (party filter, the engine's expiry sweep), written by the same write.
ALTER TABLE resources ADD COLUMN in_use_by jsonb NOT NULL DEFAULT '{}';

ALTER TABLE interests ADD COLUMN client text;

CREATE INDEX interests_expiry ON interests (expires_at);

UPDATE resources SET in_use_by = u.uses
FROM (
    SELECT resource_id, jsonb_object_agg(party, jsonb_build_object(
        'client', client, 'registered_at', registered_at, 'expires_at', expires_at)) AS uses
    FROM interests GROUP BY resource_id
) AS u
WHERE u.resource_id = resources.id;
