-- The quota ledger's tables. tenure's own migration 2 created them before kinds could own tables, so
-- on a database migrated since then they are already in place and this changes nothing.
CREATE TABLE IF NOT EXISTS quotas (
    project    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit INTEGER NOT NULL CHECK (hard_limit >= 0),
    in_use     INTEGER NOT NULL DEFAULT 0 CHECK (in_use >= 0),
    reserved   INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (project, resource)
);

CREATE TABLE IF NOT EXISTS quota_reservations (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    FOREIGN KEY (project, resource) REFERENCES quotas (project, resource)
);
