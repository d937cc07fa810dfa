-- Resources per kind and state, kept by folding the journal into state_counts (tenure.store.counts).
-- SQLite has one writer at a time, so journal rows commit in seq order: the position is a seq. Reads
-- start from the journal's range (CROSS JOIN keeps that order: a planner may prefer to walk every
-- resource and probe its journal).

-- name: position
SELECT '', seq FROM state_counts_position

-- name: start
-- No position yet (the row was deleted with the counts): fold from the start of the journal.
INSERT INTO state_counts_position (only_row, seq) VALUES (1, 0) ON CONFLICT DO NOTHING

-- name: upto
-- The last row of the next batch after the position, and how many rows the batch holds.
SELECT '', max(seq), count(*) FROM (SELECT seq FROM journal WHERE seq > :seq ORDER BY seq LIMIT :batch)
HAVING max(seq) IS NOT NULL

-- name: fold
-- Each row that changed the state takes one from the state it left and adds one to the one it entered
-- (a creation only adds); bookkeeping rows (@retry, @desired, ...) stay in their state and count nothing.
WITH moved AS (
    SELECT r.kind, j.from_state, j.to_state
    FROM journal AS j CROSS JOIN resources AS r ON r.id = j.resource_id
    WHERE j.seq > :seq AND j.seq <= :to_seq AND j.from_state IS NOT j.to_state
), deltas AS (
    SELECT kind, to_state AS state, 1 AS n FROM moved
    UNION ALL
    SELECT kind, from_state, -1 FROM moved WHERE from_state IS NOT NULL
)
INSERT INTO state_counts (kind, state, n)
SELECT kind, state, sum(n) FROM deltas WHERE true GROUP BY kind, state
ON CONFLICT (kind, state) DO UPDATE SET n = state_counts.n + excluded.n

-- name: advance
UPDATE state_counts_position SET seq = :to_seq

-- name: read_position
SELECT '', seq FROM state_counts_position

-- name: counts
-- The folded counts plus any rows journaled since the fold, in one snapshot. The position read just
-- before comes in as a value; the first row says whether it was still the position when this
-- statement ran (if a fold moved it meanwhile, the caller reads again).
WITH recent AS (
    SELECT r.kind, j.from_state, j.to_state
    FROM journal AS j CROSS JOIN resources AS r ON r.id = j.resource_id
    WHERE j.seq > :seq AND j.from_state IS NOT j.to_state
), deltas AS (
    SELECT kind, state, n FROM state_counts
    UNION ALL
    SELECT kind, to_state, 1 FROM recent
    UNION ALL
    SELECT kind, from_state, -1 FROM recent WHERE from_state IS NOT NULL
)
SELECT NULL, NULL, NULL, coalesce((SELECT seq = :seq FROM state_counts_position), :seq = 0)
UNION ALL
SELECT * FROM (
    SELECT kind, state, sum(n), NULL FROM deltas WHERE kind IN (SELECT value FROM json_each(:kinds))
    GROUP BY kind, state HAVING sum(n) <> 0
)

-- name: oldest
-- When the longest-waiting resource of one (kind, state) entered it (asked state by state, as on
-- PostgreSQL, where the planner must see the state to plan well): the first entry of its index.
SELECT min(entered_at) FROM resources INDEXED BY resources_entered WHERE kind = ? AND state = ?
