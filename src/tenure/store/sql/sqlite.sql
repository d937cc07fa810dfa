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

-- name: insert_flow_run
INSERT INTO flow_runs (id, flow, version, fingerprint, state, resource_id, inputs, overrides, retries, failure,
                       pending_retry, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: update_flow_run
UPDATE flow_runs
SET state = ?, overrides = ?, retries = ?, failure = ?, pending_retry = ?, updated_at = ?
WHERE id = ?

-- name: upsert_flow_task
INSERT INTO flow_tasks (run_id, task, state, attempt, seq, result, failure, revert_failure, inputs, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, task) DO UPDATE
SET state = excluded.state, attempt = excluded.attempt, seq = excluded.seq, result = excluded.result,
    failure = excluded.failure, revert_failure = excluded.revert_failure, inputs = excluded.inputs,
    updated_at = excluded.updated_at

-- name: get_flow_run
SELECT id, flow, version, fingerprint, state, resource_id, inputs, overrides, retries, failure, pending_retry,
       created_at, updated_at
FROM flow_runs WHERE id = ?

-- name: get_flow_tasks
SELECT task, state, attempt, seq, result, failure, revert_failure, inputs FROM flow_tasks WHERE run_id = ? ORDER BY seq, task

-- name: list_flow_runs
SELECT id, flow, version, fingerprint, state, resource_id, inputs, overrides, retries, failure, pending_retry,
       created_at, updated_at
FROM flow_runs
WHERE (? IS NULL OR resource_id = ?) AND (? IS NULL OR state = ?)
ORDER BY created_at, id
LIMIT ?

-- name: upsert_quota
INSERT INTO quotas (project, resource, hard_limit) VALUES (?, ?, ?)
ON CONFLICT (project, resource) DO UPDATE SET hard_limit = excluded.hard_limit

-- name: get_quota
SELECT project, resource, hard_limit, in_use, reserved FROM quotas WHERE project = ? AND resource = ?

-- name: get_reservation
SELECT id, project, resource, amount, state FROM quota_reservations WHERE id = ?

-- name: take_quota
-- Reserve only while the limit holds: the check and the increment are one statement.
UPDATE quotas SET reserved = reserved + ?
WHERE project = ? AND resource = ? AND in_use + reserved + ? <= hard_limit

-- name: insert_reservation
-- Claims the id first: a concurrent reserve with the same id waits here, then finds it taken.
INSERT INTO quota_reservations (id, project, resource, amount, state, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING

-- name: move_reservation
-- Moves a reservation from one state to the next, only from the state it is known to be in.
UPDATE quota_reservations SET state = ?, updated_at = ? WHERE id = ? AND state = ?

-- name: adjust_quota
UPDATE quotas SET reserved = reserved + ?, in_use = in_use + ? WHERE project = ? AND resource = ?
