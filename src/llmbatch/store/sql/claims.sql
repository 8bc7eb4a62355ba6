-- Queries of the workers that share a store's work (issue 27): their rows, tokens and claims.
-- Same conventions as queries.sql. A claim is a row of `leases` named `batch:<id>` or
-- `group:<key>`; the store-wide engine lease is the row named `engine`.

-- name: worker_token
-- A worker's token, drawn the first time its holder name is seen.
INSERT INTO workers (holder, queues, started_at, seen_at) VALUES (:holder, :queues, :now, :now)
ON CONFLICT (holder) DO UPDATE SET seen_at = excluded.seen_at
RETURNING token

-- name: set_worker_queues
UPDATE workers SET queues = :queues WHERE token = :token

-- name: worker_seen
UPDATE workers SET seen_at = :now, packed = packed + :packed, submitted = submitted + :submitted,
    polled = polled + :polled, ingested = ingested + :ingested, outcomes = outcomes + :outcomes
WHERE token = :token

-- name: workers_seen_since
SELECT token, holder, queues, started_at, seen_at, packed, submitted, polled, ingested, outcomes
FROM workers WHERE seen_at >= :since ORDER BY token

-- name: forget_workers
-- Rows of workers gone for long, holding nothing.
DELETE FROM workers WHERE ABS(seen_at) < :before
  AND token NOT IN (SELECT token FROM leases WHERE expires_at >= :before)

-- name: renew_claims
-- Every lease and claim the worker holds, even one that ran out while nobody took it over;
-- never one it gave up (expires_at 0), which is another worker's to take.
UPDATE leases SET expires_at = :expires_at
WHERE holder = :holder AND token = :token AND expires_at > 0
RETURNING name

-- name: all_claims
SELECT name, holder, token, expires_at, since FROM leases ORDER BY name

-- name: release_claims
UPDATE leases SET expires_at = 0 WHERE holder = :holder

-- name: worker_gone
-- A worker that stopped (or was found dead) is not counted when the others share the work:
-- its last sighting is kept, negated (its row and figures stay until forgotten).
UPDATE workers SET seen_at = -ABS(seen_at) WHERE holder = :holder

-- name: drop_claim
DELETE FROM leases WHERE name = :name

-- name: set_batch_queue
UPDATE batches SET queue = :queue WHERE id = :id

-- name: open_batch_queues
SELECT id, queue FROM batches WHERE state <> 'ingested'

-- name: fence_any
-- Whether the caller holds any live claim (facts learned while working: a group's back-off).
SELECT 1 FROM leases WHERE token = :token AND expires_at - :now > 0

-- name: claim_new
-- A claim on what the caller just made, for as long as the claims it acts under.
INSERT INTO leases (name, holder, token, expires_at, since)
SELECT :name, :holder, :token, MAX(expires_at), :now FROM leases WHERE token = :token
ON CONFLICT (name) DO NOTHING
