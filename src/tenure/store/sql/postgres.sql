-- Queries of the PostgreSQL store. Column order matches tenure.store.rows.

-- name: create
-- Insert the resource and its creation journal row in one statement; nothing comes back when the
-- idempotency key is already taken.
WITH made AS (
    INSERT INTO resources (id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, kind_version)
    VALUES (%(id)s, %(kind)s, %(state)s, 1, %(spec)s, %(data)s, NULL, 1, 0, %(sharable)s,
            NULL, 0, %(now)s, %(next_attempt_at)s, %(deadline)s, NULL, NULL, NULL,
            %(idempotency_key)s, %(now)s, %(now)s, %(kind_version)s)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, state
), logged AS (
    INSERT INTO journal (resource_id, version, event, from_state, to_state, actor, at, detail)
    SELECT id, 1, %(event)s, NULL, state, %(actor)s, %(now)s, '{}' FROM made
)
SELECT count(*) FROM made

-- name: get_resource
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version
FROM resources WHERE id = %s

-- name: get_resources
-- Several resources by id, in one statement (the event loop's reads share one: tenure.store.postgres_reads).
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version
FROM resources WHERE id = ANY(%s)

-- name: get_by_idempotency_key
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version
FROM resources WHERE idempotency_key = %s

-- name: write
-- The compare-and-swap that every change to a resource goes through (tenure.store.write plans it). It
-- matches only while the row is still at the version and state the write was planned from, in the same
-- life (created_at: an id pruned and created again starts over at version 1) and, when a claim token is
-- given, still claimed under it. A write that keeps the claim (a desired state) leaves
-- the claim, and the attempt count a takeover may have bumped without a new version, alone. Otherwise
-- the claim is what the write says: none, or the writer's own claim carried into the next state,
-- whose step the same worker runs at once.
-- PostgresDatabase.commit sends it as one statement with the write's side rows (the write_* blocks
-- that apply, each a CTE) and its journal row (write_journal): every part is written only if the swap
-- matched, in one round trip, committed together.
WITH moved AS (
    UPDATE resources
    SET state = %(state)s, version = %(version)s, data = coalesce(%(data)s, data), error = %(error)s,
        attempts = CASE WHEN %(keeps_claim)s THEN attempts ELSE %(attempts)s END, entered_at = %(entered_at)s,
        next_attempt_at = %(next_attempt_at)s, deadline = %(deadline)s, desired_state = %(desired_state)s,
        generation = %(generation)s, observed_generation = %(observed_generation)s, updated_at = %(now)s,
        claim_token = CASE WHEN %(keeps_claim)s THEN claim_token ELSE %(claim_token)s END,
        claimed_by = CASE WHEN %(keeps_claim)s THEN claimed_by ELSE %(claimed_by)s END,
        claim_expires_at = CASE WHEN %(keeps_claim)s THEN claim_expires_at ELSE %(claim_expires_at)s::timestamptz END,
        in_use_by = coalesce(%(in_use_by)s, in_use_by), forced_generation = coalesce(%(forced)s, forced_generation)
    WHERE id = %(id)s AND version = %(expected_version)s AND state = %(source)s AND created_at = %(created_at)s
      AND (%(token)s::text IS NULL OR claim_token = %(token)s)
    RETURNING id
)

-- name: write_opens_wait
-- Side rows of a write into a wait state: the wait it opens, or the provisional one it completes.
, waited AS (
    INSERT INTO waits (token_hash, resource_id, version, state, keys, rules, created_at, deadline)
    SELECT %(wait_hash)s, id, %(version)s, %(state)s, %(wait_keys)s, %(wait_rules)s, %(now)s, %(deadline)s
    FROM moved
    ON CONFLICT (token_hash) DO UPDATE
    SET version = excluded.version, state = excluded.state, keys = excluded.keys, rules = excluded.rules,
        deadline = excluded.deadline
    WHERE waits.resource_id = excluded.resource_id
)

-- name: write_carries_waits
-- Side rows of a desired state set while waiting: the waits move to the new version with the resource,
-- since their callbacks still answer this stay in the state (provisional waits of a running step do not).
, carried AS (
    UPDATE waits SET version = %(version)s
    WHERE resource_id IN (SELECT id FROM moved) AND version = %(expected_version)s AND rules <> '{}'::jsonb
)

-- name: write_settles
-- Side rows of a write that callbacks caused: they are settled exactly when it commits.
, settled AS (
    UPDATE inbox SET applied_at = %(now)s, result = %(result)s
    WHERE seq = ANY(%(settle)s::bigint[]) AND applied_at IS NULL AND EXISTS (SELECT 1 FROM moved)
)

-- name: write_uses
-- Side rows of a write that changes who uses a resource: the interests index follows in_use_by.
, dropped AS (
    DELETE FROM interests
    WHERE resource_id IN (SELECT id FROM moved) AND party = ANY(%(uses_dropped)s::text[])
)
, kept AS (
    INSERT INTO interests (resource_id, party, client, registered_at, expires_at)
    SELECT m.id, u.party, u.client, u.registered_at, u.expires_at
    FROM moved AS m,
         unnest(%(kept_party)s::text[], %(kept_client)s::text[], %(kept_registered)s::timestamptz[],
                %(kept_expires)s::timestamptz[]) AS u(party, client, registered_at, expires_at)
    ON CONFLICT (resource_id, party) DO UPDATE
    SET client = excluded.client, registered_at = excluded.registered_at, expires_at = excluded.expires_at
)

-- name: write_journal
-- The journal row of a write, and the statement's answer: a row when the swap matched, none when it lost.
INSERT INTO journal (resource_id, version, event, from_state, to_state, actor, at, detail)
SELECT id, %(version)s, %(event)s, %(source)s, %(state)s, %(actor)s, %(now)s, %(detail)s FROM moved
RETURNING seq

-- === pages of resources (tenure.store.plans picks the block) ===
-- Each block walks one index in id order, so that a page costs what it returns: the party's interests,
-- one (kind, state) range per lane merged, the desired state, the kind, or the primary key. The other
-- filters are checked on the rows it walks (page_residual, spliced in at /*residual*/; page_columns goes
-- in at /*columns*/). The cursor 'after' is '' for the first page: every id sorts after it; 'key' is the value the walk is by (the kind,
-- the desired state, the party).
--
-- Each block states its cursor as a row comparison on its index's whole key, (k, id) > (K, after), and
-- orders by that key. With only k = K AND id > after, the planner may see the order as plain id order,
-- which the primary key also gives, and walk the primary key filtering as it goes (through every
-- finished resource before the few started ones). The kind and desired walks bound the leading column
-- from above (k <= K: nothing else comes before the end of its range); the lane and party walks keep
-- the equalities and the plain cursor as well, which give the planner its estimate and the scan its
-- start and end. Their row comparison is >= (the plain cursor keeps the page strictly after 'after'):
-- PostgreSQL estimates a row comparison by its first column alone, and k > K selects next to nothing,
-- so with > the planner expected a handful of rows and sorted a popular party's every interest (34 ms
-- at a million resources) instead of walking fifty in order (0.3 ms).

-- name: page_columns
r.id, r.kind, r.state, r.version, r.spec, r.data, r.desired_state, r.generation, r.observed_generation, r.sharable,
r.error, r.attempts, r.entered_at, r.next_attempt_at, r.deadline, r.claim_token, r.claimed_by, r.claim_expires_at,
r.idempotency_key, r.created_at, r.updated_at, r.in_use_by, r.forced_generation, r.kind_version

-- name: page_residual
  AND (%(kind)s::text IS NULL OR r.kind = %(kind)s)
  AND (%(states)s::text[] IS NULL OR r.state = ANY(%(states)s::text[]))
  AND (%(desired)s::text IS NULL OR r.desired_state = %(desired)s)
  AND (%(data_key)s::text IS NULL OR r.data -> %(data_key)s::text = to_jsonb(%(data_value)s::text))

-- name: page_all
SELECT /*columns*/
FROM resources AS r
WHERE r.id > %(after)s /*residual*/
ORDER BY r.id
LIMIT %(limit)s

-- name: page_kind
SELECT /*columns*/
FROM resources AS r
WHERE (r.kind, r.id) > (%(key)s, %(after)s) AND r.kind <= %(key)s /*residual*/
ORDER BY r.kind, r.id
LIMIT %(limit)s

-- name: page_desired
SELECT /*columns*/
FROM resources AS r
WHERE (r.desired_state, r.id) > (%(key)s, %(after)s) AND r.desired_state <= %(key)s /*residual*/
ORDER BY r.desired_state, r.id
LIMIT %(limit)s

-- name: page_party
-- Starts from the party's interests, kept in resource id order.
SELECT /*columns*/
FROM interests AS i JOIN resources AS r ON r.id = i.resource_id
WHERE i.party = %(key)s AND i.resource_id > %(after)s AND (i.party, i.resource_id) >= (%(key)s, %(after)s)
  AND i.expires_at > %(now)s
  /*residual*/
ORDER BY i.party, i.resource_id
LIMIT %(limit)s

-- name: page_lanes
-- One range of (kind, state, id) per lane, each cut at the page size, merged in id order.
SELECT p.* FROM unnest(%(lane_kinds)s::text[], %(lane_states)s::text[]) AS l(kind, state)
CROSS JOIN LATERAL (
    SELECT /*columns*/
    FROM resources AS r
    WHERE r.kind = l.kind AND r.state = l.state AND r.id > %(after)s
      AND (r.kind, r.state, r.id) >= (l.kind, l.state, %(after)s)
      /*residual*/
    ORDER BY r.kind, r.state, r.id
    LIMIT %(limit)s
) AS p
ORDER BY p.id
LIMIT %(limit)s

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
FROM journal WHERE resource_id = %s AND version > %s ORDER BY version LIMIT %s

-- name: feed
SELECT seq, resource_id, version, event, from_state, to_state, actor, at, detail
FROM journal WHERE seq > %s ORDER BY seq LIMIT %s

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS tenure_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL
)

-- name: lock_migrations
-- Concurrent migrators queue here; the number is arbitrary but fixed.
SELECT pg_advisory_xact_lock(7370756)

-- name: migrations_table_exists
SELECT count(*) FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name = 'tenure_migrations'

-- name: schema_version
SELECT coalesce(max(version), 0) FROM tenure_migrations

-- name: create_owned_migrations_table
-- The migrations of tables kinds own (tenure.store.tables), per owner.
CREATE TABLE IF NOT EXISTS tenure_owned_migrations (
    owner      text NOT NULL,
    version    integer NOT NULL,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL,
    PRIMARY KEY (owner, version)
)

-- name: owned_migrations_table_exists
SELECT count(*) FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name = 'tenure_owned_migrations'

-- name: owned_version
SELECT coalesce(max(version), 0) FROM tenure_owned_migrations WHERE owner = %s

-- name: record_owned_migration
INSERT INTO tenure_owned_migrations (owner, version, name, applied_at) VALUES (%s, %s, %s, %s)

-- name: record_migration
INSERT INTO tenure_migrations (version, name, applied_at) VALUES (%s, %s, %s)

-- name: insert_flow_run
INSERT INTO flow_runs (id, flow, version, fingerprint, state, resource_id, inputs, overrides, retries, failure,
                       pending_retry, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: get_flow_run
SELECT id, flow, version, fingerprint, state, resource_id, inputs, overrides, retries, failure, pending_retry,
       created_at, updated_at
FROM flow_runs WHERE id = %s

-- name: get_flow_tasks
SELECT task, state, attempt, seq, result, failure, revert_failure, inputs FROM flow_tasks WHERE run_id = %s ORDER BY seq, task

-- name: list_flow_runs
SELECT id, flow, version, fingerprint, state, resource_id, inputs, overrides, retries, failure, pending_retry,
       created_at, updated_at
FROM flow_runs
WHERE (%s::text IS NULL OR resource_id = %s) AND (%s::text IS NULL OR state = %s)
  AND (%s::text IS NULL OR (created_at, id) > (SELECT created_at, id FROM flow_runs WHERE id = %s))
ORDER BY created_at, id
LIMIT %s

-- name: save_flow
-- Every checkpoint of one engine step in one statement (one round trip, one commit in autocommit).
WITH saved AS (
    INSERT INTO flow_tasks (run_id, task, state, attempt, seq, result, failure, revert_failure, inputs, updated_at)
    SELECT %(run_id)s, t.task, t.state, t.attempt, t.seq, t.result::jsonb, t.failure::jsonb,
           t.revert_failure::jsonb, t.inputs::jsonb, %(now)s
    FROM unnest(%(tasks)s::text[], %(states)s::text[], %(attempts)s::int[], %(seqs)s::int[],
                %(results)s::text[], %(failures)s::text[], %(revert_failures)s::text[], %(inputs)s::text[])
         AS t(task, state, attempt, seq, result, failure, revert_failure, inputs)
    ON CONFLICT (run_id, task) DO UPDATE
    SET state = excluded.state, attempt = excluded.attempt, seq = excluded.seq, result = excluded.result,
        failure = excluded.failure, revert_failure = excluded.revert_failure, inputs = excluded.inputs,
    updated_at = excluded.updated_at
    RETURNING 1
), run AS (
    UPDATE flow_runs
    SET state = %(state)s, overrides = %(overrides)s, retries = %(retries)s, failure = %(failure)s,
        pending_retry = %(pending_retry)s, updated_at = %(now)s
    WHERE id = %(run_id)s AND %(update_run)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM saved), (SELECT count(*) FROM run)

-- === the engine: claims and fenced writes ===

-- name: renew_claims
UPDATE resources SET claim_expires_at = %s WHERE id = ANY(%s) AND claim_token = ANY(%s)
RETURNING claim_token

-- name: release_claim
-- Setting next_attempt_at (to now) also wakes the other workers.
UPDATE resources SET claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL, next_attempt_at = %s
WHERE id = %s AND claim_token = %s

-- name: expired_waits
SELECT id, kind, state, version, spec, data, desired_state, generation, observed_generation, sharable,
       error, attempts, entered_at, next_attempt_at, deadline, claim_token, claimed_by, claim_expires_at,
       idempotency_key, created_at, updated_at, in_use_by, forced_generation, kind_version
FROM resources WHERE deadline IS NOT NULL AND deadline <= %s AND kind = ANY(%s) ORDER BY deadline LIMIT %s

-- name: next_wakeup
-- The earliest moment anything becomes due: a retry, a claim's expiry, a deadline, a callback, a use's expiry.
-- Each part starts from the index of what is due: the kind filter is a few values, and a planner would
-- rather walk the kind's resources, every finished one included (OFFSET 0 keeps the subquery first).
-- A held resource was due when its claim was taken (or kept), so the claims that may expire are found
-- among the resources due by now; and only while no unclaimed step is due by now, since the claim a
-- worker then makes takes over expired claims anyway. Either way the part reads the held resources,
-- never the whole backlog, and no index holds a claim column: claims and renewals stay heap-only.
WITH step AS MATERIALIZED (
    SELECT min(next_attempt_at) AS at FROM resources
    WHERE next_attempt_at IS NOT NULL AND claim_token IS NULL AND kind || '@' || kind_version::text || '/' || state = ANY(%(pairs)s)
)
SELECT (SELECT at FROM step),
       CASE WHEN (SELECT at FROM step) <= %(now)s THEN NULL ELSE
           (SELECT min(claim_expires_at) FROM resources
            WHERE next_attempt_at <= %(now)s AND claim_token IS NOT NULL AND kind || '@' || kind_version::text || '/' || state = ANY(%(pairs)s)) END,
       (SELECT min(deadline) FROM resources WHERE deadline IS NOT NULL AND kind = ANY(%(kinds)s)),
       (SELECT min(i.received_at)
        FROM (SELECT token_hash, resource_id, received_at FROM inbox WHERE applied_at IS NULL OFFSET 0) AS i
        JOIN resources AS r ON r.id = i.resource_id
        LEFT JOIN waits AS w ON w.token_hash = i.token_hash
        WHERE r.kind = ANY(%(kinds)s) AND (w.token_hash IS NULL OR w.rules <> '{}'::jsonb OR w.version <> r.version)),
       (SELECT u.expires_at
        FROM (SELECT resource_id, expires_at FROM interests ORDER BY expires_at OFFSET 0) AS u
        JOIN resources AS r ON r.id = u.resource_id
        WHERE r.kind = ANY(%(kinds)s) ORDER BY u.expires_at LIMIT 1)

-- === the engine: waits and the callback inbox ===

-- name: insert_provisional_wait
-- A step read its token: callbacks under it are recorded from now on, applied once it waits.
INSERT INTO waits (token_hash, resource_id, version, state, keys, rules, created_at, deadline)
VALUES (%s, %s, %s, %s, '[]', '{}', %s, NULL)

-- name: get_wait
SELECT token_hash, resource_id, version, state, keys, rules, created_at, deadline FROM waits WHERE token_hash = %s

-- name: get_wait_at
SELECT token_hash, resource_id, version, state, keys, rules, created_at, deadline
FROM waits WHERE resource_id = %s AND version = %s

-- name: get_version_state
SELECT version, state FROM resources WHERE id = %s

-- name: insert_callback
INSERT INTO inbox (token_hash, resource_id, key, status, data, error, digest, received_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
RETURNING seq

-- name: get_callback_by_key
SELECT seq, digest, result FROM inbox WHERE token_hash = %s AND key = %s

-- name: callbacks_of_wait
SELECT seq, token_hash, resource_id, key, status, data, error, received_at, applied_at, result
FROM inbox WHERE token_hash = %s ORDER BY seq

-- name: count_callbacks_of_wait
SELECT count(*) FROM inbox WHERE token_hash = %s

-- name: unsettled_callbacks
-- Early answers to a step still running (its wait is provisional, at the resource's version) wait
-- until the step says what it waits for: they are not due yet, and must not crowd out the rest.
SELECT i.seq, i.token_hash, i.resource_id, i.key, i.status, i.data, i.error, i.received_at, i.applied_at, i.result
FROM inbox AS i JOIN resources AS r ON r.id = i.resource_id LEFT JOIN waits AS w ON w.token_hash = i.token_hash
WHERE i.applied_at IS NULL AND r.kind = ANY(%s)
  AND (w.token_hash IS NULL OR w.rules <> '{}'::jsonb OR w.version <> r.version)
ORDER BY i.seq LIMIT %s

-- name: settle_callback
UPDATE inbox SET applied_at = %s, result = %s WHERE seq = %s AND applied_at IS NULL

-- name: claim
-- Take up to 'limit' due resources no live worker holds, oldest due first. SKIP LOCKED lets many
-- workers claim at once without queueing on each other's rows; each claim gets its own token. NO KEY
-- (the lock the UPDATE takes anyway) lets callbacks and journal rows that reference the row go on.
-- Taking over an expired claim counts the dead holder's attempt: a step that kills its worker runs
-- out of retries like any other failing step.
WITH due AS (
    SELECT id, claim_token IS NOT NULL AS takeover
    FROM resources
    WHERE next_attempt_at <= %(now)s AND kind || '@' || kind_version::text || '/' || state = ANY(%(pairs)s)
      AND (claim_token IS NULL OR claim_expires_at <= %(now)s)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE resources AS r
SET claim_token = replace(gen_random_uuid()::text, '-', ''), claimed_by = %(worker)s,
    claim_expires_at = %(expires)s, attempts = r.attempts + CASE WHEN due.takeover THEN 1 ELSE 0 END
FROM due
WHERE r.id = due.id
RETURNING r.id, r.kind, r.state, r.version, r.spec, r.data, r.desired_state, r.generation, r.observed_generation,
          r.sharable, r.error, r.attempts, r.entered_at, r.next_attempt_at, r.deadline, r.claim_token, r.claimed_by,
          r.claim_expires_at, r.idempotency_key, r.created_at, r.updated_at, r.in_use_by, r.forced_generation, r.kind_version, due.takeover

-- name: listen_work
-- The channel migration 3's triggers notify whenever work becomes due.
LISTEN tenure_work

-- name: listen_changes
-- The channel migration 4's trigger notifies whenever the journal grows.
LISTEN tenure_changes

-- === desired state ===

-- name: release_idle
-- Gives back the claim of a resting resource with nothing left to do: not due again until a write
-- makes it so. Only at the version claimed: a desired state set meanwhile keeps it due.
UPDATE resources SET claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL, next_attempt_at = NULL
WHERE id = %s AND claim_token = %s AND version = %s

-- name: reconcile_hops
-- The states the engine already moved the resource on from, on its way to this generation's desired state.
SELECT from_state FROM journal
WHERE resource_id = %s AND detail ->> 'reconcile' = %s::text
ORDER BY version

-- === interests ===

-- name: interest_resource
-- Locks the row, so that two parties racing for a resource that is not sharable go one at a time.
SELECT sharable FROM resources WHERE id = %s FOR NO KEY UPDATE

-- name: other_party
SELECT party FROM interests WHERE resource_id = %s AND party <> %s AND expires_at > %s
ORDER BY registered_at, party
LIMIT 1

-- name: upsert_interest
-- Registering again renews; an interest that had expired counts as registered anew.
INSERT INTO interests AS i (resource_id, party, registered_at, expires_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (resource_id, party) DO UPDATE
SET registered_at = CASE WHEN i.expires_at > excluded.registered_at THEN i.registered_at ELSE excluded.registered_at END,
    expires_at = excluded.expires_at
RETURNING registered_at, expires_at

-- name: delete_interest
DELETE FROM interests WHERE resource_id = %s AND party = %s
RETURNING expires_at

-- name: interests_of
SELECT resource_id, party, registered_at, expires_at FROM interests
WHERE resource_id = %s AND expires_at > %s
ORDER BY registered_at, party

-- === the change feed ===

-- name: changes
-- A page of the change feed after the position (txid, seq), and the frontier: the last row below the
-- horizon, the oldest transaction still running. Below the horizon every transaction has finished,
-- so no row can appear there any more; rows at or above it wait for a later call. Ordered by
-- (txid, seq), which keeps each resource's rows in version order (see tenure.store.feed). The
-- frontier comes on every row; without one (an empty journal) nothing comes at all.
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
), frontier AS (
    SELECT j.txid, j.seq FROM journal AS j
    WHERE j.txid < (SELECT xmin FROM horizon)
    ORDER BY j.txid DESC, j.seq DESC
    LIMIT 1
), page AS (
    SELECT j.txid, j.seq, j.resource_id, j.version, j.event, j.from_state, j.to_state, j.actor, j.at, j.detail,
           r.kind
    FROM journal AS j JOIN resources AS r ON r.id = j.resource_id
    WHERE j.txid < (SELECT xmin FROM horizon)
      AND (j.txid, j.seq) > (%(txid)s::text::xid8, %(seq)s::bigint)
      AND (%(kind)s::text IS NULL OR r.kind = %(kind)s)
      AND (%(resource_id)s::text IS NULL OR j.resource_id = %(resource_id)s)
      AND (%(state)s::text IS NULL OR j.to_state = %(state)s)
    ORDER BY j.txid, j.seq
    LIMIT %(limit)s
)
SELECT f.txid::text, f.seq, p.txid::text, p.seq, p.resource_id, p.version, p.event, p.from_state, p.to_state,
       p.actor, p.at, p.detail, p.kind
FROM frontier AS f LEFT JOIN page AS p ON true
ORDER BY p.txid, p.seq

-- name: latest_position
SELECT j.txid::text, j.seq FROM journal AS j
WHERE j.txid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
ORDER BY j.txid DESC, j.seq DESC
LIMIT 1

-- === reads for people and metrics ===

-- name: pending_waits
-- The resource (so that an unknown one is told apart from one waiting for nothing), its non-provisional
-- waits at its current version, and the answers each has received.
SELECT r.version, w.token_hash, w.state, w.keys, w.created_at, w.deadline, i.key, i.status, i.received_at
FROM resources AS r
LEFT JOIN waits AS w ON w.resource_id = r.id AND w.version = r.version AND w.rules <> '{}'::jsonb
LEFT JOIN inbox AS i ON i.token_hash = w.token_hash
WHERE r.id = %s
ORDER BY w.created_at, w.token_hash, i.seq

-- name: stay_version
-- The version at which the resource entered the state it is in at the given version: the newest entry that
-- changed (or re-entered) its state. Bookkeeping entries (@retry, @desired, ...) do not start a stay.
SELECT max(version) FROM journal
WHERE resource_id = %s AND version <= %s AND (event = '@create' OR left(event, 1) <> '@')

-- name: expired_uses
-- Resources with a use that expired, earliest first (the engine's sweep removes them, journaled).
SELECT u.resource_id FROM interests AS u JOIN resources AS r ON r.id = u.resource_id
WHERE u.expires_at <= %s AND r.kind = ANY(%s)
GROUP BY u.resource_id ORDER BY min(u.expires_at), u.resource_id LIMIT %s

