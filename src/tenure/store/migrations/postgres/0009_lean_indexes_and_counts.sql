-- A store of millions: indexes that serve every list in order without slowing the hot writes, room
-- for heap-only updates, vacuuming tuned per table, and counts per state that do not scan history.

-- Lists by state are served by (kind, state, id), one kind at a time; lists by kind alone by (kind, id),
-- whose columns never change and so never stop an update from being heap-only.
DROP INDEX resources_state;
CREATE INDEX resources_kind ON resources (kind, id);

-- Claims are renewed by resource id: with no index on the claim columns, claiming, renewing and
-- releasing a row change no indexed column and can be heap-only updates.
DROP INDEX resources_claim;

-- Free room in each page for the new version of a row (heap-only updates need it on the same page),
-- and vacuum that keeps pace with a table whose live rows are updated many times each. The journal,
-- waits and inbox mostly grow: vacuum after inserts keeps their visibility maps current.
ALTER TABLE resources SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
ALTER TABLE journal SET (autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE waits SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);
ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);

-- Resources per kind and state, kept by folding the journal in (tenure.store.counts): reading them
-- costs the changes since the last read, not the history.
CREATE TABLE state_counts (
    kind  text NOT NULL,
    state text NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (kind, state)
);

-- How far the journal is folded into state_counts: its last (txid, seq) folded. One row.
CREATE TABLE state_counts_position (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    txid     xid8 NOT NULL,
    seq      bigint NOT NULL
);

-- With writers held off, the resources and the journal agree: count the one, start after the other.
LOCK TABLE resources IN SHARE MODE;
INSERT INTO state_counts (kind, state, n) SELECT kind, state, count(*) FROM resources GROUP BY kind, state;
INSERT INTO state_counts_position (txid, seq)
SELECT coalesce(max(txid), '0'::xid8), coalesce(max(seq) FILTER (WHERE txid = (SELECT max(txid) FROM journal)), 0)
FROM journal;
