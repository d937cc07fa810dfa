-- Webhook subscriptions (SQLite): named blocks run by tenure.store.subscriptions. The columns every
-- read returns, in this order: id, url, secret, resource_id, kind, states, created_by, created_at,
-- position, delivered, attempts, next_attempt_at, last_error, last_delivered_at, claimed_by,
-- claim_expires_at.

-- name: insert_subscription
INSERT INTO subscriptions (id, url, secret, resource_id, kind, states, created_by, created_at, position)
VALUES (:id, :url, :secret, :resource_id, :kind, :states, :created_by, :created_at, :position)

-- name: get_subscription
SELECT id, url, secret, resource_id, kind, states, created_by, created_at, position, delivered, attempts,
       next_attempt_at, last_error, last_delivered_at, claimed_by, claim_expires_at
FROM subscriptions WHERE id = :id

-- name: list_subscriptions
-- A keyset page in id order (ids are time-ordered): every creator's (:every) or one creator's.
SELECT id, url, secret, resource_id, kind, states, created_by, created_at, position, delivered, attempts,
       next_attempt_at, last_error, last_delivered_at, claimed_by, claim_expires_at
FROM subscriptions
WHERE (:every OR created_by = :created_by) AND id > :after
ORDER BY id
LIMIT :limit

-- name: delete_subscription
DELETE FROM subscriptions WHERE id = :id RETURNING id

-- name: claim_subscriptions
-- Subscriptions behind the feed's head, not held by a live lease, and not backing off: taken for
-- :worker until :expires. Positions are fixed-width lowercase hex, so text order is feed order.
UPDATE subscriptions SET claimed_by = :worker, claim_expires_at = :expires
WHERE id IN (
    SELECT id FROM subscriptions
    WHERE position < :head
      AND (claimed_by IS NULL OR claim_expires_at <= :now)
      AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
    ORDER BY coalesce(next_attempt_at, created_at), id
    LIMIT :limit
)
RETURNING id, url, secret, resource_id, kind, states, created_by, created_at, position, delivered, attempts,
          next_attempt_at, last_error, last_delivered_at, claimed_by, claim_expires_at

-- name: advance_subscription
-- Moves the cursor forward (never back) while :worker still holds the subscription, clears the
-- failure streak and renews the lease.
UPDATE subscriptions
SET position = :position, delivered = delivered + :count, attempts = 0, next_attempt_at = NULL,
    last_error = NULL, last_delivered_at = coalesce(:delivered_at, last_delivered_at), claim_expires_at = :expires
WHERE id = :id AND claimed_by = :worker AND position <= :position

-- name: fail_subscription
-- One more failed attempt: try again at :next_attempt_at, by whichever deliverer claims it then.
UPDATE subscriptions
SET attempts = attempts + 1, next_attempt_at = :next_attempt_at, last_error = :error,
    claimed_by = NULL, claim_expires_at = NULL
WHERE id = :id AND claimed_by = :worker

-- name: release_subscription
UPDATE subscriptions SET claimed_by = NULL, claim_expires_at = NULL WHERE id = :id AND claimed_by = :worker

-- name: next_subscription_due
-- The earliest time still to come at which a subscription backing off (or held by a lease) may be
-- claimed again. (A lease that lapsed on one that is up to date is left as it is: nothing is due.)
SELECT min(coalesce(claim_expires_at, next_attempt_at)) FROM subscriptions
WHERE coalesce(claim_expires_at, next_attempt_at) > :now
