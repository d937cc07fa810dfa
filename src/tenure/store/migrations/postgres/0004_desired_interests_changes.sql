-- Desired state, interested parties, and a change feed that a reader can resume without gaps.

-- The transaction that wrote each journal row. Sequence values are taken before commit, so rows
-- become visible out of seq order; below the oldest transaction still running nothing new can
-- appear, so the change feed reads in (txid, seq) order up to there.
ALTER TABLE journal ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX journal_feed ON journal (txid, seq);

CREATE INDEX resources_desired ON resources (desired_state, id) WHERE desired_state IS NOT NULL;

CREATE TABLE interests (
    resource_id   text NOT NULL REFERENCES resources (id),
    -- a URI the party controls (tag: and urn: preferred)
    party         text NOT NULL,
    registered_at timestamptz NOT NULL,
    -- on the store's clock; an expired interest no longer counts
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (resource_id, party)
);

CREATE INDEX interests_party ON interests (party, resource_id);

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
