-- Flow runs and their per-task checkpoints; quota ledgers with reservations.
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
