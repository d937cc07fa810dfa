-- Resources of a state by when they entered it: /metrics asks how long the oldest has been waiting in
-- each wait state, which otherwise reads every resource in the state.
CREATE INDEX resources_entered ON resources (kind, state, entered_at);
