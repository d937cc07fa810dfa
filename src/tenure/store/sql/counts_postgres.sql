-- Resources per kind and state, kept by folding the journal into state_counts (tenure.store.counts).
-- The journal is folded in (txid, seq) order below the horizon, as the change feed reads it: below the
-- oldest transaction still running no row can appear any more, so a row is never folded twice and
-- never skipped. Reads add the rows above the horizon that their snapshot sees.

-- name: position
SELECT txid::text, seq FROM state_counts_position FOR UPDATE

-- name: start
-- No position yet (the row was deleted with the counts): fold from the start of the journal.
INSERT INTO state_counts_position (txid, seq) VALUES ('0', 0) ON CONFLICT DO NOTHING

-- name: upto
-- The last row of the next batch after the position, and how many rows the batch holds.
WITH batch AS (
    SELECT txid, seq FROM journal
    WHERE (txid, seq) > (%(txid)s::text::xid8, %(seq)s) AND txid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY txid, seq
    LIMIT %(batch)s
)
SELECT last.txid::text, last.seq, (SELECT count(*) FROM batch)
FROM (SELECT txid, seq FROM batch ORDER BY txid DESC, seq DESC LIMIT 1) AS last

-- name: fold
-- Each row that changed the state takes one from the state it left and adds one to the one it entered
-- (a creation only adds); bookkeeping rows (@retry, @desired, ...) stay in their state and count nothing.
WITH moved AS (
    SELECT r.kind, j.from_state, j.to_state
    FROM journal AS j JOIN resources AS r ON r.id = j.resource_id
    WHERE (j.txid, j.seq) > (%(txid)s::text::xid8, %(seq)s)
      AND (j.txid, j.seq) <= (%(to_txid)s::text::xid8, %(to_seq)s)
      AND j.from_state IS DISTINCT FROM j.to_state
), deltas AS (
    SELECT kind, to_state AS state, 1 AS n FROM moved
    UNION ALL
    SELECT kind, from_state, -1 FROM moved WHERE from_state IS NOT NULL
)
INSERT INTO state_counts (kind, state, n)
SELECT kind, state, sum(n) FROM deltas GROUP BY kind, state
ON CONFLICT (kind, state) DO UPDATE SET n = state_counts.n + excluded.n

-- name: advance
UPDATE state_counts_position SET txid = %(to_txid)s::text::xid8, seq = %(to_seq)s

-- name: read_position
SELECT txid::text, seq FROM state_counts_position

-- name: counts
-- The folded counts plus the rows not folded yet (above the horizon, committed by now), in one
-- snapshot: exact as of this statement, however long another transaction holds the horizon back.
-- The position read just before comes in as values, so that the planner reads a range of the
-- journal's (txid, seq) index; the first row says whether it was still the position when this
-- statement ran (if a fold moved it meanwhile, the caller reads again).
WITH recent AS (
    SELECT r.kind, j.from_state, j.to_state
    FROM journal AS j JOIN resources AS r ON r.id = j.resource_id
    WHERE (j.txid, j.seq) > (%(txid)s::text::xid8, %(seq)s) AND j.from_state IS DISTINCT FROM j.to_state
), deltas AS (
    SELECT kind, state, n FROM state_counts
    UNION ALL
    SELECT kind, to_state, 1 FROM recent
    UNION ALL
    SELECT kind, from_state, -1 FROM recent WHERE from_state IS NOT NULL
)
SELECT NULL, NULL, NULL, coalesce((SELECT txid::text = %(txid)s AND seq = %(seq)s FROM state_counts_position),
                                  %(seq)s = 0)
UNION ALL
SELECT kind, state, sum(n), NULL FROM deltas WHERE kind = ANY(%(kinds)s) GROUP BY kind, state HAVING sum(n) <> 0

-- name: oldest
-- When the longest-waiting resource of one (kind, state) entered it. Asked state by state, with the
-- state as a value the planner sees: planned for any state at once, it took each to hold its share of
-- every resource (a tenth of a million transfers) and read the whole table for each.
SELECT min(entered_at) FROM resources WHERE kind = %s AND state = %s
