-- A store of millions: indexes that serve every list in order, and counts per state that do not
-- scan history.

-- Lists by state are served by (kind, state, id), one kind at a time; lists by kind alone by (kind, id).
DROP INDEX resources_state;
CREATE INDEX resources_kind ON resources (kind, id);

-- Claims are renewed by resource id: an index on the claim token would be rewritten by every claim.
DROP INDEX resources_claim;

-- Resources per kind and state, kept by folding the journal in (tenure.store.counts): reading them
-- costs the changes since the last read, not the history.
CREATE TABLE state_counts (
    kind  TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (kind, state)
) WITHOUT ROWID;

-- How far the journal is folded into state_counts: its last seq folded. One row.
CREATE TABLE state_counts_position (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    seq      INTEGER NOT NULL
);

-- Migrations run in one writing transaction: the resources and the journal agree.
INSERT INTO state_counts (kind, state, n) SELECT kind, state, count(*) FROM resources GROUP BY kind, state;
INSERT INTO state_counts_position (only_row, seq) SELECT 1, coalesce(max(seq), 0) FROM journal;
