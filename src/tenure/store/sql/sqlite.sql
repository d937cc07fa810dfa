-- Queries of the SQLite store. Column order matches tenure.store.rows.

-- name: insert_resource
INSERT INTO resources (id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (idempotency_key) DO NOTHING

-- name: insert_journal
INSERT INTO journal (resource_id, version, event, from_state, to_state, actor, at, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)

-- name: get_resource
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at
FROM resources WHERE id = ?

-- name: get_by_idempotency_key
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at
FROM resources WHERE idempotency_key = ?

-- name: fire
-- The compare-and-swap: it matches only while the row is still at the version (and state) the
-- transition was planned from.
UPDATE resources
SET state = ?, version = ?, data = COALESCE(?, data), error = ?, attempts = 0, entered_at = ?,
    next_attempt_at = ?, deadline = ?, claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL,
    updated_at = ?
WHERE id = ? AND version = ? AND state = ?

-- name: list_resources
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at
FROM resources
WHERE (:kind IS NULL OR kind = :kind)
  AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:after IS NULL OR id > :after)
ORDER BY id
LIMIT :limit

-- name: journal
SELECT seq, resource_id, version, event, from_state, to_state, actor, at, detail
FROM journal WHERE resource_id = ? AND version > ? ORDER BY version LIMIT ?

-- name: feed
SELECT seq, resource_id, version, event, from_state, to_state, actor, at, detail
FROM journal WHERE seq > ? ORDER BY seq LIMIT ?

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS tenure_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)

-- name: migrations_table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tenure_migrations'

-- name: schema_version
SELECT coalesce(max(version), 0) FROM tenure_migrations

-- name: record_migration
INSERT INTO tenure_migrations (version, name, applied_at) VALUES (?, ?, ?)
