-- Webhook subscriptions: watchers who are not users. Each keeps its own cursor in the change feed
-- (the journal is the outbox, see tenure.store.subscriptions) and a lease, so that one deliverer at a
-- time sends its changes, in order.
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
