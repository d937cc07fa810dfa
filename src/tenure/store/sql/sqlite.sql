-- Queries of the SQLite store. Column order matches tenure.store.rows.

-- name: insert_resource
INSERT INTO resources (id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, kind_version)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (idempotency_key) DO NOTHING

-- name: write
-- The compare-and-swap that every change to a resource goes through (tenure.store.write plans it, and
-- SQLiteDatabase.commit runs it with the write's journal and side rows in one transaction). It matches
-- only while the row is still at the version and state the write was planned from, in the same life
-- (?23, created_at: an id pruned and created again starts over at version 1) and, when a claim token
-- is given (?17), still claimed under it. A write that keeps the claim (?13: a desired state)
-- leaves the claim, and the attempt count a takeover may have bumped without a new version, alone.
-- Otherwise the claim is what the write says (?20-?22): none, or the writer's own claim carried into
-- the next state, whose step the same worker runs at once.
UPDATE resources
SET state = ?1, version = ?2, data = coalesce(?3, data), error = ?4,
    attempts = CASE WHEN ?13 THEN attempts ELSE ?5 END, entered_at = ?6, next_attempt_at = ?7, deadline = ?8,
    desired_state = ?9, generation = ?10, observed_generation = ?11, updated_at = ?12,
    claim_token = CASE WHEN ?13 THEN claim_token ELSE ?20 END, claimed_by = CASE WHEN ?13 THEN claimed_by ELSE ?21 END,
    claim_expires_at = CASE WHEN ?13 THEN claim_expires_at ELSE ?22 END, in_use_by = coalesce(?18, in_use_by),
    forced_generation = coalesce(?19, forced_generation)
WHERE id = ?14 AND version = ?15 AND state = ?16 AND (?17 IS NULL OR claim_token = ?17) AND created_at = ?23

-- name: drop_use
-- Side rows of a write that changes who uses a resource: the index row of a party that left.
DELETE FROM interests WHERE resource_id = ? AND party = ?

-- name: keep_use
-- ... and of a party that registered or renewed.
INSERT INTO interests (resource_id, party, client, registered_at, expires_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (resource_id, party) DO UPDATE
SET client = excluded.client, registered_at = excluded.registered_at, expires_at = excluded.expires_at

-- name: insert_journal
INSERT INTO journal (resource_id, version, event, from_state, to_state, actor, at, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)

-- name: get_resource
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version
FROM resources WHERE id = ?

-- name: get_by_idempotency_key
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version
FROM resources WHERE idempotency_key = ?

-- === pages of resources (tenure.store.plans picks the block) ===
-- Each block walks one index in id order, so that a page costs what it returns: the party's interests,
-- one (kind, state) range per lane merged, the desired state, the kind, or the primary key. The other
-- filters are checked on the rows it walks (page_residual, spliced in at /*residual*/, page_columns at /*columns*/; written so that
-- no index can serve them, which keeps the planner on the walk). The cursor 'after' is '' for the
-- first page: every id sorts after it; :key is the value the walk is by (the kind, the desired state,
-- the party).

-- name: page_columns
r.id, r.kind, r.state, r.version, r.spec, r.data, r.desired_state, r.generation, r.observed_generation, r.sharable,
r.error, r.attempts, r.entered_at, r.next_attempt_at, r.deadline, r.claim_token, r.claimed_by, r.claim_expires_at,
r.idempotency_key, r.created_at, r.updated_at, r.in_use_by, r.forced_generation, r.kind_version

-- name: page_residual
  AND (:kind IS NULL OR r.kind = :kind)
  AND (:states IS NULL OR r.state IN (SELECT value FROM json_each(:states)))
  AND (:desired IS NULL OR r.desired_state = :desired)
  AND (:data_path IS NULL OR json_extract(r.data, :data_path) = :data_value)

-- name: page_all
SELECT /*columns*/
FROM resources AS r
WHERE r.id > :after /*residual*/
ORDER BY r.id
LIMIT :limit

-- name: page_kind
SELECT /*columns*/
FROM resources AS r INDEXED BY resources_kind
WHERE r.kind = :key AND r.id > :after /*residual*/
ORDER BY r.id
LIMIT :limit

-- name: page_desired
SELECT /*columns*/
FROM resources AS r INDEXED BY resources_desired
WHERE r.desired_state IS NOT NULL AND r.desired_state = :key AND r.id > :after /*residual*/
ORDER BY r.id
LIMIT :limit

-- name: page_party
-- Starts from the party's interests, kept in resource id order.
SELECT /*columns*/
FROM interests AS i INDEXED BY interests_party JOIN resources AS r ON r.id = i.resource_id
WHERE i.party = :key AND i.resource_id > :after AND i.expires_at > :now /*residual*/
ORDER BY i.resource_id
LIMIT :limit

-- name: page_lane
-- One lane of a page by (kind, state): its range of (kind, state, id) cut at the page size. A page
-- is the lanes joined by UNION ALL (each with its own :lane_kind_N, :lane_state_N), then cut again.
SELECT * FROM (
    SELECT /*columns*/
    FROM resources AS r INDEXED BY resources_kind_state
    WHERE r.kind = :lane_kind_N AND r.state = :lane_state_N AND r.id > :after /*residual*/
    ORDER BY r.id
    LIMIT :limit
)

-- name: stored_kinds
-- Every kind the table holds, one index probe per kind (a loose scan of (kind, id)).
WITH RECURSIVE k(kind) AS (
    SELECT min(kind) FROM resources
    UNION ALL
    SELECT (SELECT min(r.kind) FROM resources AS r WHERE r.kind > k.kind) FROM k WHERE k.kind IS NOT NULL
)
SELECT kind FROM k WHERE kind IS NOT NULL

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

-- name: create_owned_migrations_table
-- The migrations of tables kinds own (tenure.store.tables), per owner.
CREATE TABLE IF NOT EXISTS tenure_owned_migrations (
    owner      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (owner, version)
)

-- name: owned_migrations_table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tenure_owned_migrations'

-- name: owned_version
SELECT coalesce(max(version), 0) FROM tenure_owned_migrations WHERE owner = ?

-- name: record_owned_migration
INSERT INTO tenure_owned_migrations (owner, version, name, applied_at) VALUES (?, ?, ?, ?)

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
  AND (? IS NULL OR (created_at, id) > (SELECT created_at, id FROM flow_runs WHERE id = ?))
ORDER BY created_at, id
LIMIT ?

-- === the engine: claims and fenced writes ===

-- name: renew_claims
UPDATE resources SET claim_expires_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND claim_token IN (SELECT value FROM json_each(?))
RETURNING claim_token

-- name: release_claim
-- Setting next_attempt_at (to now) also wakes the other workers.
UPDATE resources SET claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL, next_attempt_at = ?
WHERE id = ? AND claim_token = ?

-- name: expired_waits
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version
FROM resources WHERE deadline IS NOT NULL AND deadline <= ? AND kind IN (SELECT value FROM json_each(?)) ORDER BY deadline LIMIT ?

-- name: next_wakeup
-- The earliest moment anything becomes due: a retry, a claim's expiry, a deadline, a callback, a use's expiry.
-- Each part starts from the index of what is due (the kind filter is few values: a planner would
-- rather walk the kind's index, through every finished resource; CROSS JOIN keeps the order written).
-- A held resource was due when its claim was taken (or kept), so the claims that may expire are found
-- among the resources due by now; and only while no unclaimed step is due by now, since the claim a
-- worker then makes takes over expired claims anyway. Either way the part reads the held resources,
-- never the whole backlog, and no index holds a claim column (tenure.store.claims).
WITH step AS MATERIALIZED (
    SELECT min(next_attempt_at) AS at FROM resources
    WHERE next_attempt_at IS NOT NULL AND claim_token IS NULL AND kind || '@' || kind_version || '/' || state IN (SELECT value FROM json_each(:pairs))
)
SELECT (SELECT at FROM step),
       CASE WHEN (SELECT at FROM step) <= :now THEN NULL ELSE
           (SELECT min(claim_expires_at) FROM resources INDEXED BY resources_due
            WHERE next_attempt_at <= :now AND claim_token IS NOT NULL AND kind || '@' || kind_version || '/' || state IN (SELECT value FROM json_each(:pairs))) END,
       (SELECT min(deadline) FROM resources WHERE deadline IS NOT NULL AND kind IN (SELECT value FROM json_each(:kinds))),
       (SELECT min(i.received_at) FROM inbox AS i INDEXED BY inbox_unapplied CROSS JOIN resources AS r ON r.id = i.resource_id
        LEFT JOIN waits AS w ON w.token_hash = i.token_hash
        WHERE i.applied_at IS NULL AND r.kind IN (SELECT value FROM json_each(:kinds))
          AND (w.token_hash IS NULL OR w.rules <> '{}' OR w.version <> r.version)),
       (SELECT u.expires_at FROM interests AS u INDEXED BY interests_expiry CROSS JOIN resources AS r ON r.id = u.resource_id
        WHERE r.kind IN (SELECT value FROM json_each(:kinds)) ORDER BY u.expires_at LIMIT 1)

-- === the engine: waits and the callback inbox ===

-- name: insert_wait
-- Opens the wait, or completes the provisional one the step opened when it first read its token.
INSERT INTO waits (token_hash, resource_id, version, state, keys, rules, created_at, deadline)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (token_hash) DO UPDATE
SET version = excluded.version, state = excluded.state, keys = excluded.keys, rules = excluded.rules,
    deadline = excluded.deadline
WHERE waits.resource_id = excluded.resource_id

-- name: insert_provisional_wait
-- A step read its token: callbacks under it are recorded from now on, applied once it waits.
INSERT INTO waits (token_hash, resource_id, version, state, keys, rules, created_at, deadline)
VALUES (?, ?, ?, ?, '[]', '{}', ?, NULL)

-- name: get_wait
SELECT token_hash, resource_id, version, state, keys, rules, created_at, deadline FROM waits WHERE token_hash = ?

-- name: get_wait_at
SELECT token_hash, resource_id, version, state, keys, rules, created_at, deadline
FROM waits WHERE resource_id = ? AND version = ?

-- name: get_version_state
SELECT version, state FROM resources WHERE id = ?

-- name: insert_callback
INSERT INTO inbox (token_hash, resource_id, key, status, data, error, digest, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
RETURNING seq

-- name: get_callback_by_key
SELECT seq, digest, result FROM inbox WHERE token_hash = ? AND key = ?

-- name: callbacks_of_wait
SELECT seq, token_hash, resource_id, key, status, data, error, received_at, applied_at, result
FROM inbox WHERE token_hash = ? ORDER BY seq

-- name: count_callbacks_of_wait
SELECT count(*) FROM inbox WHERE token_hash = ?

-- name: unsettled_callbacks
-- Early answers to a step still running (its wait is provisional, at the resource's version) wait
-- until the step says what it waits for: they are not due yet, and must not crowd out the rest.
SELECT i.seq, i.token_hash, i.resource_id, i.key, i.status, i.data, i.error, i.received_at, i.applied_at, i.result
FROM inbox AS i INDEXED BY inbox_unapplied CROSS JOIN resources AS r ON r.id = i.resource_id
LEFT JOIN waits AS w ON w.token_hash = i.token_hash
WHERE i.applied_at IS NULL AND r.kind IN (SELECT value FROM json_each(?))
  AND (w.token_hash IS NULL OR w.rules <> '{}' OR w.version <> r.version)
ORDER BY i.seq LIMIT ?

-- name: settle_callback
UPDATE inbox SET applied_at = ?, result = ? WHERE seq = ? AND applied_at IS NULL

-- name: claim_candidates
SELECT id, claim_token IS NOT NULL
FROM resources INDEXED BY resources_due
WHERE next_attempt_at <= :now AND kind || '@' || kind_version || '/' || state IN (SELECT value FROM json_each(:pairs))
  AND (claim_token IS NULL OR claim_expires_at <= :now)
ORDER BY next_attempt_at
LIMIT :limit

-- name: claim_one
-- A takeover (the third parameter is 1) counts the dead holder's attempt.
UPDATE resources SET claim_token = lower(hex(randomblob(16))), claimed_by = ?, claim_expires_at = ?,
    attempts = attempts + ?
WHERE id = ?
RETURNING id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version

-- === desired state ===

-- name: release_idle
-- Gives back the claim of a resting resource with nothing left to do: not due again until a write
-- makes it so. Only at the version claimed: a desired state set meanwhile keeps it due.
UPDATE resources SET claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL, next_attempt_at = NULL
WHERE id = ? AND claim_token = ? AND version = ?

-- name: reconcile_hops
-- The states the engine already moved the resource on from, on its way to this generation's desired state.
SELECT from_state FROM journal
WHERE resource_id = ? AND json_extract(detail, '$.reconcile') = ?
ORDER BY version

-- === interests ===

-- name: interest_resource
-- (SQLite's single writer serialises registrations; PostgreSQL's version locks the row.)
SELECT sharable FROM resources WHERE id = ?

-- name: other_party
SELECT party FROM interests WHERE resource_id = ? AND party <> ? AND expires_at > ?
ORDER BY registered_at, party
LIMIT 1

-- name: upsert_interest
-- Registering again renews; an interest that had expired counts as registered anew.
INSERT INTO interests AS i (resource_id, party, registered_at, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (resource_id, party) DO UPDATE
SET registered_at = CASE WHEN i.expires_at > excluded.registered_at THEN i.registered_at ELSE excluded.registered_at END,
    expires_at = excluded.expires_at
RETURNING registered_at, expires_at

-- name: delete_interest
DELETE FROM interests WHERE resource_id = ? AND party = ?
RETURNING expires_at

-- name: interests_of
SELECT resource_id, party, registered_at, expires_at FROM interests
WHERE resource_id = ? AND expires_at > ?
ORDER BY registered_at, party

-- === the change feed ===

-- name: changes
-- A page of the change feed after the position (seq: one writer at a time hands seqs out in commit
-- order, so nothing can appear below the last one read), and the frontier, the last seq. The
-- columns are those of the PostgreSQL query, whose positions also carry a transaction id (0 here).
-- The frontier is a scalar subquery, which SQLite answers from the end of the journal's key; as a
-- plain aggregate joined below it read the whole journal. The resources are LEFT JOINed (every entry
-- has its resource): for an inner join SQLite builds a Bloom filter over every resource first.
WITH frontier AS (
    SELECT (SELECT max(seq) FROM journal) AS seq
), page AS (
    SELECT j.seq, j.resource_id, j.version, j.event, j.from_state, j.to_state, j.actor, j.at, j.detail, r.kind
    FROM journal AS j LEFT JOIN resources AS r ON r.id = j.resource_id
    WHERE j.seq > :seq
      AND (:kind IS NULL OR r.kind = :kind)
      AND (:resource_id IS NULL OR j.resource_id = :resource_id)
      AND (:state IS NULL OR j.to_state = :state)
    ORDER BY j.seq
    LIMIT :limit
)
SELECT 0, f.seq, 0, p.seq, p.resource_id, p.version, p.event, p.from_state, p.to_state, p.actor, p.at, p.detail,
       p.kind
FROM frontier AS f LEFT JOIN page AS p ON 1
WHERE f.seq IS NOT NULL
ORDER BY p.seq

-- name: latest_position
SELECT 0, max(seq) FROM journal

-- === reads for people and metrics ===

-- name: pending_waits
-- The resource (so that an unknown one is told apart from one waiting for nothing), its non-provisional
-- waits at its current version, and the answers each has received.
SELECT r.version, w.token_hash, w.state, w.keys, w.created_at, w.deadline, i.key, i.status, i.received_at
FROM resources AS r
LEFT JOIN waits AS w ON w.resource_id = r.id AND w.version = r.version AND w.rules <> '{}'
LEFT JOIN inbox AS i ON i.token_hash = w.token_hash
WHERE r.id = ?
ORDER BY w.created_at, w.token_hash, i.seq

-- name: stay_version
-- The version at which the resource entered the state it is in at the given version: the newest entry that
-- changed (or re-entered) its state. Bookkeeping entries (@retry, @desired, ...) do not start a stay.
SELECT max(version) FROM journal
WHERE resource_id = ? AND version <= ? AND (event = '@create' OR substr(event, 1, 1) <> '@')

-- name: carry_waits
-- A desired state set on a waiting resource bumps its version: its wait moves with it, since its
-- callbacks still answer this stay in the state (provisional waits of a running step do not).
UPDATE waits SET version = ? WHERE resource_id = ? AND version = ? AND rules <> '{}'

-- name: expired_uses
-- Resources with a use that expired, earliest first (the engine's sweep removes them, journaled).
SELECT u.resource_id FROM interests AS u INDEXED BY interests_expiry CROSS JOIN resources AS r ON r.id = u.resource_id
WHERE u.expires_at <= ? AND r.kind IN (SELECT value FROM json_each(?))
GROUP BY u.resource_id ORDER BY min(u.expires_at), u.resource_id LIMIT ?

