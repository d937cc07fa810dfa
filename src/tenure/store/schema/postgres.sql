-- The current schema: what applying every migration gives. Keep in step with migrations/.
CREATE TABLE resources (
    id                  text PRIMARY KEY,
    kind                text NOT NULL,
    state               text NOT NULL,
    version             bigint NOT NULL CHECK (version >= 1),
    spec                jsonb NOT NULL DEFAULT '{}',
    data                jsonb NOT NULL DEFAULT '{}',
    desired_state       text,
    generation          bigint NOT NULL DEFAULT 1,
    observed_generation bigint NOT NULL DEFAULT 0,
    sharable            boolean NOT NULL DEFAULT true,
    error               text,
    attempts            integer NOT NULL DEFAULT 0,
    entered_at          timestamptz NOT NULL,
    next_attempt_at     timestamptz,
    deadline            timestamptz,
    claim_token         text,
    claimed_by          text,
    claim_expires_at    timestamptz,
    idempotency_key     text UNIQUE,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    -- who uses the resource: party URI -> client, registered_at, expires_at
    in_use_by           jsonb NOT NULL DEFAULT '{}',
    -- the generation a forced teardown set (it waits for no party)
    forced_generation   bigint,
    -- the version of its kind the resource was created under
    kind_version        integer NOT NULL DEFAULT 1
);

-- Lists: by kind and state (several states: one range per state, merged), by kind alone.
CREATE INDEX resources_kind_state ON resources (kind, state, id);
CREATE INDEX resources_kind ON resources (kind, id);
CREATE INDEX resources_due ON resources (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX resources_deadline ON resources (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX resources_entered ON resources (kind, state, entered_at);

-- Room for heap-only updates (claims, heartbeats and releases touch no indexed column), and vacuum
-- that keeps pace with rows updated many times each.
ALTER TABLE resources SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);

CREATE TABLE journal (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource_id text NOT NULL REFERENCES resources (id),
    version     bigint NOT NULL,
    event       text NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    actor       text,
    at          timestamptz NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    UNIQUE (resource_id, version),
    -- the transaction that wrote the row: the change feed reads in (txid, seq) order, up to the
    -- oldest transaction still running (below it no new row can appear)
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX journal_feed ON journal (txid, seq);

ALTER TABLE journal SET (autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05);

CREATE TABLE flow_runs (
    id          text PRIMARY KEY,
    flow        text NOT NULL,
    version     integer NOT NULL,
    fingerprint text NOT NULL,
    state       text NOT NULL,
    resource_id text REFERENCES resources (id),
    inputs      jsonb NOT NULL DEFAULT '{}',
    overrides   jsonb NOT NULL DEFAULT '{}',
    retries     jsonb NOT NULL DEFAULT '{}',
    failure     jsonb,
    -- a subflow retry decided but not yet carried out (survives a kill during its revert)
    pending_retry jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX flow_runs_resource ON flow_runs (resource_id);
CREATE INDEX flow_runs_state ON flow_runs (state);

CREATE TABLE flow_tasks (
    run_id     text NOT NULL REFERENCES flow_runs (id),
    task       text NOT NULL,
    state      text NOT NULL,
    attempt    integer NOT NULL,
    seq        integer NOT NULL,
    result     jsonb,
    failure    jsonb,
    -- why the task's last revert failed, kept apart from why the task failed
    revert_failure jsonb,
    -- the flow values the task was started with; its reverts get these
    inputs     jsonb,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, task)
);

CREATE TABLE quotas (
    project    text NOT NULL,
    resource   text NOT NULL,
    hard_limit bigint NOT NULL CHECK (hard_limit >= 0),
    in_use     bigint NOT NULL DEFAULT 0 CHECK (in_use >= 0),
    reserved   bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (project, resource)
);

CREATE TABLE quota_reservations (
    id         text PRIMARY KEY,
    project    text NOT NULL,
    resource   text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    state      text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    FOREIGN KEY (project, resource) REFERENCES quotas (project, resource)
);

CREATE TABLE waits (
    -- sha-256 of the correlation token handed to the external party; the token itself is not kept
    token_hash  text PRIMARY KEY,
    resource_id text NOT NULL REFERENCES resources (id),
    -- the resource's version while it waits: a callback applies only while the resource is still there
    version     bigint NOT NULL,
    state       text NOT NULL,
    -- the answers awaited (e.g. one per resource definition) and what their roll-up fires
    keys        jsonb NOT NULL,
    rules       jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    deadline    timestamptz
);

CREATE INDEX waits_resource ON waits (resource_id, version);

ALTER TABLE waits SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);

CREATE TABLE inbox (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  text NOT NULL REFERENCES waits (token_hash),
    resource_id text NOT NULL REFERENCES resources (id),
    key         text NOT NULL,
    status      text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    error       text,
    -- identifies the callback's content, so that a repeat is recognised as a duplicate
    digest      text NOT NULL,
    received_at timestamptz NOT NULL,
    applied_at  timestamptz,
    result      text,
    UNIQUE (token_hash, key)
);

CREATE INDEX inbox_unapplied ON inbox (seq) WHERE applied_at IS NULL;

ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);

-- Workers LISTEN on this channel: anything that makes work due (a resource entering a work state,
-- a new deadline, a callback) wakes them at once instead of at their next poll.
CREATE FUNCTION tenure_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenure_work', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER resources_work AFTER INSERT OR UPDATE OF next_attempt_at, deadline ON resources
    FOR EACH ROW WHEN (NEW.deadline IS NOT NULL OR (NEW.next_attempt_at IS NOT NULL AND NEW.claim_token IS NULL))
    EXECUTE FUNCTION tenure_notify_work();

CREATE TRIGGER inbox_work AFTER INSERT ON inbox
    FOR EACH ROW EXECUTE FUNCTION tenure_notify_work();

-- Lists filter on the desired state.
CREATE INDEX resources_desired ON resources (desired_state, id) WHERE desired_state IS NOT NULL;

CREATE TABLE interests (
    resource_id   text NOT NULL REFERENCES resources (id),
    -- a URI the party controls (tag: and urn: preferred)
    party         text NOT NULL,
    registered_at timestamptz NOT NULL,
    -- on the store's clock; an expired interest no longer counts
    expires_at    timestamptz NOT NULL,
    -- the client (token) that registered it
    client        text,
    PRIMARY KEY (resource_id, party)
);

CREATE INDEX interests_party ON interests (party, resource_id);
CREATE INDEX interests_expiry ON interests (expires_at);

-- Resources per kind and state, kept by folding the journal in (tenure.store.counts).
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

INSERT INTO state_counts_position (txid, seq) VALUES ('0', 0);

-- Watchers of the change feed LISTEN on this channel: one notification per transaction that
-- journals anything (NOTIFY folds identical ones), so a stream wakes at once for every change.
CREATE FUNCTION tenure_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenure_changes', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER journal_changes AFTER INSERT ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION tenure_notify_changes();

-- Webhook subscriptions: each keeps its own cursor in the change feed, and a lease.
CREATE TABLE subscriptions (
    id                text PRIMARY KEY,
    url               text NOT NULL,
    -- signs every delivery (HMAC-SHA256); shown to its creator once
    secret            text NOT NULL,
    -- the filter: one resource, or one kind and (optionally) the states its resources enter
    resource_id       text,
    kind              text,
    states            jsonb,
    -- the client that created it
    created_by        text,
    created_at        timestamptz NOT NULL,
    -- the change-feed position delivered up to: 32 hexadecimal digits, ordered as text (in "C" order)
    position          text COLLATE "C" NOT NULL,
    delivered         bigint NOT NULL DEFAULT 0,
    -- failed attempts at the next change since the last success, and when to try again
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz,
    last_error        text,
    last_delivered_at timestamptz,
    claimed_by        text,
    claim_expires_at  timestamptz,
    CHECK ((resource_id IS NULL) <> (kind IS NULL))
);

CREATE INDEX subscriptions_creator ON subscriptions (created_by, id);

-- Retention (tenure.store.retention): how far each pruning task walked the journal, as a change-feed
-- position (32 hexadecimal digits).
CREATE TABLE retention_cursors (
    task     text PRIMARY KEY,
    position text NOT NULL
);

-- Pruning deletes a resource's callbacks by resource, and deleting a resource checks none refers to it.
CREATE INDEX inbox_resource ON inbox (resource_id);
