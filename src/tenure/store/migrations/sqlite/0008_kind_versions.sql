-- Kinds evolve: a resource lives its whole life on the version of its kind it was created under, so
-- a service upgraded to a new version finishes the resources already in flight on the old one.
-- Every resource made before this migration was made under version 1.
ALTER TABLE resources ADD COLUMN kind_version INTEGER NOT NULL DEFAULT 1;
