-- Retention (SQLite): named blocks run by tenure.store.retention. Each pruning task walks the journal
-- in feed order from its cursor; every delete is bounded by :limit and names one resource (:rid), the
-- version of the journal entry that brought it into its final state (:entry) and that state (:state).

-- name: cursor
SELECT position FROM retention_cursors WHERE task = :task

-- name: hold_cursor
-- Inside the pruning transaction: the cursor is still where the walk started (nobody pruned meanwhile).
UPDATE retention_cursors SET position = position WHERE task = :task AND position = :position

-- name: start_cursor
INSERT INTO retention_cursors (task, position) VALUES (:task, :position) ON CONFLICT (task) DO NOTHING

-- name: move_cursor
UPDATE retention_cursors SET position = :position WHERE task = :task

-- name: scan
-- The next journal entries after the cursor, in feed order (one writer at a time hands seqs out in
-- commit order, so nothing can appear behind the walk), up to what the state counts have folded in:
-- an entry pruned before it is counted would be counted never (tenure.store.counts). The transaction
-- id column is PostgreSQL's.
SELECT 0, j.seq, j.resource_id, j.version, j.event, j.from_state, j.to_state, j.at
FROM journal AS j
WHERE j.seq > :seq AND j.seq <= (SELECT seq FROM state_counts_position)
ORDER BY j.seq
LIMIT :limit

-- name: resources_of
SELECT id, kind, kind_version, state FROM resources WHERE id IN (SELECT value FROM json_each(:ids))

-- name: prune_history
-- The entries between the creation and the entry into the final state, oldest first.
DELETE FROM journal WHERE seq IN (
    SELECT seq FROM journal WHERE resource_id = :rid AND version > 1 AND version < :entry ORDER BY version LIMIT :limit
)

-- name: prune_callbacks
DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox WHERE resource_id = :rid LIMIT :limit)

-- name: prune_waits
-- Waits whose callbacks are gone (prune_callbacks runs first).
DELETE FROM waits WHERE token_hash IN (
    SELECT w.token_hash FROM waits AS w
    WHERE w.resource_id = :rid AND NOT EXISTS (SELECT 1 FROM inbox AS i WHERE i.token_hash = w.token_hash)
    LIMIT :limit
)

-- name: prune_flow_tasks
DELETE FROM flow_tasks WHERE (run_id, task) IN (
    SELECT t.run_id, t.task FROM flow_runs AS f JOIN flow_tasks AS t ON t.run_id = f.id
    WHERE f.resource_id = :rid
    LIMIT :limit
)

-- name: prune_flow_runs
-- Runs whose task checkpoints are gone (prune_flow_tasks runs first).
DELETE FROM flow_runs WHERE id IN (
    SELECT f.id FROM flow_runs AS f
    WHERE f.resource_id = :rid AND NOT EXISTS (SELECT 1 FROM flow_tasks AS t WHERE t.run_id = f.id)
    LIMIT :limit
)

-- name: prune_interests
DELETE FROM interests WHERE (resource_id, party) IN (
    SELECT resource_id, party FROM interests WHERE resource_id = :rid LIMIT :limit
)

-- name: prune_journal
-- Every entry but the one that brought the resource into its final state (deleted with the row).
DELETE FROM journal WHERE seq IN (
    SELECT seq FROM journal WHERE resource_id = :rid AND version <> :entry ORDER BY version LIMIT :limit
)

-- name: delete_entry
DELETE FROM journal WHERE resource_id = :rid AND version = :entry

-- name: delete_resource
DELETE FROM resources WHERE id = :rid AND state = :state

-- name: uncount
-- A deleted resource leaves its state's count in the same transaction (tenure.store.counts).
UPDATE state_counts SET n = n - :deleted WHERE kind = :kind AND state = :state
