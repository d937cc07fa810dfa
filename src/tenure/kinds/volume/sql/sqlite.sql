-- The volume example's quota ledger (SQLite): named blocks run by tenure.kinds.volume.ledger.

-- name: upsert_quota
INSERT INTO quotas (project, resource, hard_limit) VALUES (?, ?, ?)
ON CONFLICT (project, resource) DO UPDATE SET hard_limit = excluded.hard_limit

-- name: get_quota
SELECT project, resource, hard_limit, in_use, reserved FROM quotas WHERE project = ? AND resource = ?

-- name: get_reservation
SELECT id, project, resource, amount, state FROM quota_reservations WHERE id = ?

-- name: take_quota
-- Reserve only while the limit holds: the check and the increment are one statement.
UPDATE quotas SET reserved = reserved + ?
WHERE project = ? AND resource = ? AND in_use + reserved + ? <= hard_limit

-- name: insert_reservation
-- Claims the id first: a concurrent reserve with the same id waits here, then finds it taken.
INSERT INTO quota_reservations (id, project, resource, amount, state, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING

-- name: move_reservation
-- Moves a reservation from one state to the next, only from the state it is known to be in.
UPDATE quota_reservations SET state = ?, updated_at = ? WHERE id = ? AND state = ?

-- name: adjust_quota
UPDATE quotas SET reserved = reserved + ?, in_use = in_use + ? WHERE project = ? AND resource = ?
