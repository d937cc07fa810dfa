-- The claims held right now, by when they expire: the engine's agenda asks when the next takeover
-- becomes possible, and without this index it walks every due resource to find the few held ones.
CREATE INDEX resources_held ON resources (claim_expires_at) WHERE claim_token IS NOT NULL;

-- Resources of a state by when they entered it: /metrics asks how long the oldest has been waiting in
-- each wait state, which otherwise reads every resource in the state.
CREATE INDEX resources_entered ON resources (kind, state, entered_at);
