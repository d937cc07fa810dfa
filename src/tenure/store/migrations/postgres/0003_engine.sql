-- The engine: waits for callbacks (one per attempt that asked), the callback inbox, and wake-ups.
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

-- Heartbeats renew claims by token.
CREATE INDEX resources_claim ON resources (claim_token) WHERE claim_token IS NOT NULL;

-- Workers LISTEN on this channel: anything that makes work due (a resource entering a work state,
-- a new deadline, a callback) wakes them at once instead of at their next poll.
CREATE FUNCTION tenure_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenure_work', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER resources_work AFTER INSERT OR UPDATE OF next_attempt_at, deadline ON resources
    FOR EACH ROW WHEN (NEW.next_attempt_at IS NOT NULL OR NEW.deadline IS NOT NULL)
    EXECUTE FUNCTION tenure_notify_work();

CREATE TRIGGER inbox_work AFTER INSERT ON inbox
    FOR EACH ROW EXECUTE FUNCTION tenure_notify_work();
