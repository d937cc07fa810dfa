-- Planner statistics (SQLite): named blocks run by tenure.store.statistics.

-- name: analysis_limit
-- ANALYZE looks at about this many rows of each index: cheap at any size, and close enough.
PRAGMA analysis_limit = 400

-- name: has_resources
SELECT EXISTS (SELECT 1 FROM resources)

-- name: stat_table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'

-- name: tables
-- The tables whose statistics matter: all but SQLite's own and the migrations' bookkeeping.
SELECT name FROM sqlite_master
WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name NOT LIKE 'tenure\_%' ESCAPE '\'
ORDER BY name

-- name: analyzed_tables
SELECT DISTINCT tbl FROM sqlite_stat1

-- name: optimize
-- Re-analyzes the tables this connection used whose statistics are missing or stale (grown or shrunk
-- by far since the last ANALYZE); usually it does nothing.
PRAGMA optimize
