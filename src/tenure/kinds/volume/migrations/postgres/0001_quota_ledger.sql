-- The quota ledger's tables. tenure's own migration 2 created them before kinds could own tables, so
-- on a database migrated since then they are already in place and this changes nothing.
CREATE TABLE IF NOT EXISTS quotas (
    project    text NOT NULL,
    resource   text NOT NULL,
    hard_limit bigint NOT NULL CHECK (hard_limit >= 0),
    in_use     bigint NOT NULL DEFAULT 0 CHECK (in_use >= 0),
    reserved   bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (project, resource)
);

CREATE TABLE IF NOT EXISTS quota_reservations (
    id         text PRIMARY KEY,
    project    text NOT NULL,
    resource   text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    state      text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    FOREIGN KEY (project, resource) REFERENCES quotas (project, resource)
);
