-- The engine: waits for callbacks (one per attempt that asked) and the callback inbox.
CREATE TABLE waits (
    -- sha-256 of the correlation token handed to the external party; the token itself is not kept
    token_hash  TEXT PRIMARY KEY,
    resource_id TEXT NOT NULL REFERENCES resources (id),
    -- the resource's version while it waits: a callback applies only while the resource is still there
    version     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    -- the answers awaited (e.g. one per resource definition) and what their roll-up fires
    keys        TEXT NOT NULL,
    rules       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    deadline    TEXT
);

CREATE INDEX waits_resource ON waits (resource_id, version);

CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash  TEXT NOT NULL REFERENCES waits (token_hash),
    resource_id TEXT NOT NULL REFERENCES resources (id),
    key         TEXT NOT NULL,
    status      TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',
    error       TEXT,
    -- identifies the callback's content, so that a repeat is recognised as a duplicate
    digest      TEXT NOT NULL,
    received_at TEXT NOT NULL,
    applied_at  TEXT,
    result      TEXT,
    UNIQUE (token_hash, key)
);

CREATE INDEX inbox_unapplied ON inbox (seq) WHERE applied_at IS NULL;

-- Heartbeats renew claims by token.
CREATE INDEX resources_claim ON resources (claim_token) WHERE claim_token IS NOT NULL;
