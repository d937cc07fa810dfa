-- Webhook subscriptions: watchers who are not users. Each keeps its own cursor in the change feed
-- (the journal is the outbox, see tenure.store.subscriptions) and a lease, so that one deliverer at a
-- time sends its changes, in order.
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
