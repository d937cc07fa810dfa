-- Desired state and interested parties. (SQLite has one writer at a time and hands out journal
-- seqs in commit order, so its change feed needs nothing new.)
CREATE INDEX resources_desired ON resources (desired_state, id) WHERE desired_state IS NOT NULL;

CREATE TABLE interests (
    resource_id   TEXT NOT NULL REFERENCES resources (id),
    -- a URI the party controls (tag: and urn: preferred)
    party         TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    -- on the store's clock; an expired interest no longer counts
    expires_at    TEXT NOT NULL,
    PRIMARY KEY (resource_id, party)
);

CREATE INDEX interests_party ON interests (party, resource_id);
