-- A forced teardown is remembered for the generation it set: parties registering after it (the
-- resource not yet at rest where the teardown fires) do not hold it back, and are refused.
ALTER TABLE resources ADD COLUMN forced_generation INTEGER;
