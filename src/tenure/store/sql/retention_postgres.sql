-- Retention (PostgreSQL): named blocks run by tenure.store.retention. Each pruning task walks the
-- journal in feed order from its cursor; every delete is bounded by %(limit)s and names one resource
-- (%(rid)s), the version of the journal entry that brought it into its final state (%(entry)s) and
-- that state (%(state)s).

-- name: cursor
SELECT position FROM retention_cursors WHERE task = %(task)s

-- name: hold_cursor
-- Inside the pruning transaction: the cursor is still where the walk started. The row lock makes a
-- second pruner of the same task wait for this one, then find the cursor moved and do nothing.
UPDATE retention_cursors SET position = position WHERE task = %(task)s AND position = %(position)s

-- name: start_cursor
INSERT INTO retention_cursors (task, position) VALUES (%(task)s, %(position)s) ON CONFLICT (task) DO NOTHING

-- name: move_cursor
UPDATE retention_cursors SET position = %(position)s WHERE task = %(task)s

-- name: scan
-- The next journal entries after the cursor in the change feed's (txid, seq) order, below the oldest
-- transaction still running: no entry can appear there any more, so the walk never passes one that
-- commits later (see tenure.store.feed). And only up to what the state counts have folded in: an
-- entry pruned before it is counted would be counted never (tenure.store.counts).
SELECT j.txid::text, j.seq, j.resource_id, j.version, j.event, j.from_state, j.to_state, j.at
FROM journal AS j
WHERE j.txid < pg_snapshot_xmin(pg_current_snapshot())
  AND (j.txid, j.seq) > (%(txid)s::text::xid8, %(seq)s::bigint)
  AND (j.txid, j.seq) <= (SELECT txid, seq FROM state_counts_position)
ORDER BY j.txid, j.seq
LIMIT %(limit)s

-- name: resources_of
SELECT id, kind, kind_version, state FROM resources WHERE id = ANY(%(ids)s)

-- name: prune_history
-- The entries between the creation and the entry into the final state, oldest first.
DELETE FROM journal WHERE seq IN (
    SELECT seq FROM journal
    WHERE resource_id = %(rid)s AND version > 1 AND version < %(entry)s
    ORDER BY version
    LIMIT %(limit)s
)

-- name: prune_callbacks
DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox WHERE resource_id = %(rid)s LIMIT %(limit)s)

-- name: prune_waits
-- Waits whose callbacks are gone (prune_callbacks runs first).
DELETE FROM waits WHERE token_hash IN (
    SELECT w.token_hash FROM waits AS w
    WHERE w.resource_id = %(rid)s AND NOT EXISTS (SELECT 1 FROM inbox AS i WHERE i.token_hash = w.token_hash)
    LIMIT %(limit)s
)

-- name: prune_flow_tasks
DELETE FROM flow_tasks WHERE (run_id, task) IN (
    SELECT t.run_id, t.task FROM flow_runs AS f JOIN flow_tasks AS t ON t.run_id = f.id
    WHERE f.resource_id = %(rid)s
    LIMIT %(limit)s
)

-- name: prune_flow_runs
-- Runs whose task checkpoints are gone (prune_flow_tasks runs first).
DELETE FROM flow_runs WHERE id IN (
    SELECT f.id FROM flow_runs AS f
    WHERE f.resource_id = %(rid)s AND NOT EXISTS (SELECT 1 FROM flow_tasks AS t WHERE t.run_id = f.id)
    LIMIT %(limit)s
)

-- name: prune_interests
DELETE FROM interests WHERE (resource_id, party) IN (
    SELECT resource_id, party FROM interests WHERE resource_id = %(rid)s LIMIT %(limit)s
)

-- name: prune_journal
-- Every entry but the one that brought the resource into its final state (deleted with the row).
DELETE FROM journal WHERE seq IN (
    SELECT seq FROM journal WHERE resource_id = %(rid)s AND version <> %(entry)s ORDER BY version LIMIT %(limit)s
)

-- name: delete_entry
DELETE FROM journal WHERE resource_id = %(rid)s AND version = %(entry)s

-- name: delete_resource
DELETE FROM resources WHERE id = %(rid)s AND state = %(state)s

-- name: uncount
-- A deleted resource leaves its state's count in the same transaction (tenure.store.counts).
UPDATE state_counts SET n = n - %(deleted)s WHERE kind = %(kind)s AND state = %(state)s
