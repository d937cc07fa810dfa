-- Webhook subscriptions (PostgreSQL): named blocks run by tenure.store.subscriptions. The columns every
-- read returns, in this order: id, url, secret, resource_id, kind, states, created_by, created_at,
-- position, delivered, attempts, next_attempt_at, last_error, last_delivered_at, claimed_by,
-- claim_expires_at.

-- name: insert_subscription
INSERT INTO subscriptions (id, url, secret, resource_id, kind, states, created_by, created_at, position)
VALUES (%(id)s, %(url)s, %(secret)s, %(resource_id)s, %(kind)s, %(states)s, %(created_by)s, %(created_at)s,
        %(position)s)

-- name: get_subscription
SELECT id, url, secret, resource_id, kind, states, created_by, created_at, position, delivered, attempts,
       next_attempt_at, last_error, last_delivered_at, claimed_by, claim_expires_at
FROM subscriptions WHERE id = %(id)s

-- name: list_subscriptions
-- A keyset page in id order (ids are time-ordered): every creator's (every) or one creator's.
SELECT id, url, secret, resource_id, kind, states, created_by, created_at, position, delivered, attempts,
       next_attempt_at, last_error, last_delivered_at, claimed_by, claim_expires_at
FROM subscriptions
WHERE (%(every)s::boolean OR created_by = %(created_by)s::text) AND id > %(after)s::text
ORDER BY id
LIMIT %(limit)s

-- name: delete_subscription
DELETE FROM subscriptions WHERE id = %(id)s RETURNING id

-- name: claim_subscriptions
-- Subscriptions behind the feed's head, not held by a live lease, and not backing off: taken for
-- worker until expires. SKIP LOCKED: deliverers claiming at the same time take different ones.
-- Positions are fixed-width lowercase hex, compared in "C" order (the column's collation).
WITH due AS (
    SELECT id FROM subscriptions
    WHERE position < %(head)s::text
      AND (claimed_by IS NULL OR claim_expires_at <= %(now)s)
      AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
    ORDER BY coalesce(next_attempt_at, created_at), id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE subscriptions AS s SET claimed_by = %(worker)s, claim_expires_at = %(expires)s
FROM due WHERE s.id = due.id
RETURNING s.id, s.url, s.secret, s.resource_id, s.kind, s.states, s.created_by, s.created_at, s.position,
          s.delivered, s.attempts, s.next_attempt_at, s.last_error, s.last_delivered_at, s.claimed_by,
          s.claim_expires_at

-- name: advance_subscription
-- Moves the cursor forward (never back) while worker still holds the subscription, clears the
-- failure streak and renews the lease.
UPDATE subscriptions
SET position = %(position)s, delivered = delivered + %(count)s, attempts = 0, next_attempt_at = NULL,
    last_error = NULL, last_delivered_at = coalesce(%(delivered_at)s, last_delivered_at),
    claim_expires_at = %(expires)s
WHERE id = %(id)s AND claimed_by = %(worker)s AND position <= %(position)s::text

-- name: fail_subscription
-- One more failed attempt: try again at next_attempt_at, by whichever deliverer claims it then.
UPDATE subscriptions
SET attempts = attempts + 1, next_attempt_at = %(next_attempt_at)s, last_error = %(error)s,
    claimed_by = NULL, claim_expires_at = NULL
WHERE id = %(id)s AND claimed_by = %(worker)s

-- name: release_subscription
UPDATE subscriptions SET claimed_by = NULL, claim_expires_at = NULL WHERE id = %(id)s AND claimed_by = %(worker)s

-- name: next_subscription_due
-- The earliest time still to come at which a subscription backing off (or held by a lease) may be
-- claimed again. (A lease that lapsed on one that is up to date is left as it is: nothing is due.)
SELECT min(coalesce(claim_expires_at, next_attempt_at)) FROM subscriptions
WHERE coalesce(claim_expires_at, next_attempt_at) > %(now)s
