-- The volume example's quota ledger (PostgreSQL): named blocks run by tenure.kinds.volume.ledger.

-- name: upsert_quota
INSERT INTO quotas (project, resource, hard_limit) VALUES (%s, %s, %s)
ON CONFLICT (project, resource) DO UPDATE SET hard_limit = excluded.hard_limit

-- name: get_quota
SELECT project, resource, hard_limit, in_use, reserved FROM quotas WHERE project = %s AND resource = %s

-- name: get_reservation
SELECT id, project, resource, amount, state FROM quota_reservations WHERE id = %s

-- name: take_quota
-- Reserve only while the limit holds: the check and the increment are one statement.
UPDATE quotas SET reserved = reserved + %s
WHERE project = %s AND resource = %s AND in_use + reserved + %s <= hard_limit

-- name: insert_reservation
-- Claims the id first: a concurrent reserve with the same id waits here, then finds it taken.
INSERT INTO quota_reservations (id, project, resource, amount, state, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING

-- name: move_reservation
-- Moves a reservation from one state to the next, only from the state it is known to be in.
UPDATE quota_reservations SET state = %s, updated_at = %s WHERE id = %s AND state = %s

-- name: adjust_quota
UPDATE quotas SET reserved = reserved + %s, in_use = in_use + %s WHERE project = %s AND resource = %s
