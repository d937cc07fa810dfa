-- The current schema: what applying every migration gives. Keep in step with migrations/.
-- Timestamps are ISO-8601 UTC text with microseconds: fixed width, so they compare as text.
CREATE TABLE resources (
    id                  TEXT PRIMARY KEY,
    kind                TEXT NOT NULL,
    state               TEXT NOT NULL,
    version             INTEGER NOT NULL CHECK (version >= 1),
    spec                TEXT NOT NULL DEFAULT '{}',
    data                TEXT NOT NULL DEFAULT '{}',
    desired_state       TEXT,
    generation          INTEGER NOT NULL DEFAULT 1,
    observed_generation INTEGER NOT NULL DEFAULT 0,
    sharable            INTEGER NOT NULL DEFAULT 1 CHECK (sharable IN (0, 1)),
    error               TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    entered_at          TEXT NOT NULL,
    next_attempt_at     TEXT,
    deadline            TEXT,
    claim_token         TEXT,
    claimed_by          TEXT,
    claim_expires_at    TEXT,
    idempotency_key     TEXT UNIQUE,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    -- who uses the resource: party URI -> client, registered_at, expires_at
    in_use_by           TEXT NOT NULL DEFAULT '{}',
    -- the generation a forced teardown set (it waits for no party)
    forced_generation   INTEGER,
    -- the version of its kind the resource was created under
    kind_version        INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX resources_kind_state ON resources (kind, state, id);
CREATE INDEX resources_kind ON resources (kind, id);
CREATE INDEX resources_due ON resources (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX resources_deadline ON resources (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX resources_entered ON resources (kind, state, entered_at);

CREATE TABLE journal (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_id TEXT NOT NULL REFERENCES resources (id),
    version     INTEGER NOT NULL,
    event       TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT,
    at          TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    UNIQUE (resource_id, version)
);

CREATE TABLE flow_runs (
    id          TEXT PRIMARY KEY,
    flow        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,
    resource_id TEXT REFERENCES resources (id),
    inputs      TEXT NOT NULL DEFAULT '{}',
    overrides   TEXT NOT NULL DEFAULT '{}',
    retries     TEXT NOT NULL DEFAULT '{}',
    failure     TEXT,
    -- a subflow retry decided but not yet carried out (survives a kill during its revert)
    pending_retry TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX flow_runs_resource ON flow_runs (resource_id);
CREATE INDEX flow_runs_state ON flow_runs (state);

CREATE TABLE flow_tasks (
    run_id     TEXT NOT NULL REFERENCES flow_runs (id),
    task       TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    result     TEXT,
    failure    TEXT,
    -- why the task's last revert failed, kept apart from why the task failed
    revert_failure TEXT,
    -- the flow values the task was started with; its reverts get these
    inputs     TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, task)
);

CREATE TABLE quotas (
    project    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit INTEGER NOT NULL CHECK (hard_limit >= 0),
    in_use     INTEGER NOT NULL DEFAULT 0 CHECK (in_use >= 0),
    reserved   INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (project, resource)
);

CREATE TABLE quota_reservations (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    FOREIGN KEY (project, resource) REFERENCES quotas (project, resource)
);

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


-- Lists filter on the desired state.
CREATE INDEX resources_desired ON resources (desired_state, id) WHERE desired_state IS NOT NULL;

CREATE TABLE interests (
    resource_id   TEXT NOT NULL REFERENCES resources (id),
    -- a URI the party controls (tag: and urn: preferred)
    party         TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    -- on the store's clock; an expired interest no longer counts
    expires_at    TEXT NOT NULL,
    -- the client (token) that registered it
    client        TEXT,
    PRIMARY KEY (resource_id, party)
);

CREATE INDEX interests_party ON interests (party, resource_id);
CREATE INDEX interests_expiry ON interests (expires_at);

-- Resources per kind and state, kept by folding the journal in (tenure.store.counts).
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

INSERT INTO state_counts_position (only_row, seq) VALUES (1, 0);

-- Webhook subscriptions: each keeps its own cursor in the change feed, and a lease.
CREATE TABLE subscriptions (
    id                TEXT PRIMARY KEY,
    url               TEXT NOT NULL,
    -- signs every delivery (HMAC-SHA256); shown to its creator once
    secret            TEXT NOT NULL,
    -- the filter: one resource, or one kind and (optionally) the states its resources enter
    resource_id       TEXT,
    kind              TEXT,
    states            TEXT,
    -- the client that created it
    created_by        TEXT,
    created_at        TEXT NOT NULL,
    -- the change-feed position delivered up to: 32 hexadecimal digits, ordered as text
    position          TEXT NOT NULL,
    delivered         INTEGER NOT NULL DEFAULT 0,
    -- failed attempts at the next change since the last success, and when to try again
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,
    last_error        TEXT,
    last_delivered_at TEXT,
    claimed_by        TEXT,
    claim_expires_at  TEXT,
    CHECK ((resource_id IS NULL) <> (kind IS NULL))
);

CREATE INDEX subscriptions_creator ON subscriptions (created_by, id);

-- Retention (tenure.store.retention): how far each pruning task walked the journal, as a change-feed
-- position (32 hexadecimal digits).
CREATE TABLE retention_cursors (
    task     TEXT PRIMARY KEY,
    position TEXT NOT NULL
);

-- Pruning deletes a resource's callbacks by resource, and deleting a resource checks none refers to it.
CREATE INDEX inbox_resource ON inbox (resource_id);
