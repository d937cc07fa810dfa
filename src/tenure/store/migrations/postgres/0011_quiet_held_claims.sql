-- A worker that finishes a step may keep its claim into the next work state and run that step at
-- once (tenure.store.claims: fire_claimed with hold). Such a row is due but held: no other worker
-- can take it, so waking them all for it only costs each a query for nothing. Rows a worker holds
-- wake nobody; the claim's expiry is on every worker's agenda anyway.
DROP TRIGGER resources_work ON resources;

CREATE TRIGGER resources_work AFTER INSERT OR UPDATE OF next_attempt_at, deadline ON resources
    FOR EACH ROW WHEN (NEW.deadline IS NOT NULL OR (NEW.next_attempt_at IS NOT NULL AND NEW.claim_token IS NULL))
    EXECUTE FUNCTION tenure_notify_work();
