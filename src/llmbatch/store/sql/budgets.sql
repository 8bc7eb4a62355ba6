-- Queries of hard budgets: the budgets in the store, reservations with the intent,
-- settlement at ingest, holds. Same conventions as queries.sql. Amounts are integers of 1e-6 USD.

-- name: budget_lines
SELECT r.id, r.queue, r.text_bytes, b.body FROM requests r JOIN request_bodies b ON b.hash = r.body_hash
WHERE r.id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: upsert_budget
INSERT INTO budgets (queue, period, limit_micro, updated_at)
VALUES (:queue, :period, :limit_micro, :now)
ON CONFLICT (queue, period) DO UPDATE
SET limit_micro = excluded.limit_micro, updated_at = excluded.updated_at

-- name: delete_budgets
DELETE FROM budgets WHERE queue = :queue AND (CAST(:period AS TEXT) IS NULL OR period = :period)

-- name: budget_of
SELECT limit_micro FROM budgets WHERE queue = :queue AND period = :period

-- name: budget_rows
SELECT queue, period, limit_micro, updated_at FROM budgets ORDER BY queue, period

-- name: budgets_over
-- The store's budgets over a reservation's queues (and every queue together), to lock.
SELECT queue, period, limit_micro FROM budgets WHERE queue = '*' OR queue IN (SELECT value FROM json_each(:queues))
ORDER BY queue, period

-- name: policy_rows
SELECT queue, allow_unpriced, assume_context_tokens, updated_at FROM budget_policy ORDER BY queue

-- name: policy_of
SELECT allow_unpriced, assume_context_tokens FROM budget_policy WHERE queue = :queue

-- name: upsert_policy
INSERT INTO budget_policy (queue, allow_unpriced, assume_context_tokens, updated_at)
VALUES (:queue, :allow_unpriced, :assume_context_tokens, :now)
ON CONFLICT (queue) DO UPDATE
SET allow_unpriced = excluded.allow_unpriced,
    assume_context_tokens = excluded.assume_context_tokens, updated_at = excluded.updated_at

-- name: delete_policy
DELETE FROM budget_policy WHERE queue = :queue

-- name: budgets_stored
SELECT (SELECT COUNT(*) FROM budgets) + (SELECT COUNT(*) FROM budget_policy)

-- name: committed
SELECT COALESCE(SUM(reserved + spent), 0) FROM spend
WHERE day >= :first AND day < :end AND (CAST(:queue AS TEXT) = '*' OR queue = :queue)

-- name: insert_spend
INSERT INTO spend (batch_id, queue, day, reserved, worst) VALUES (:id, :queue, :day, :amount, :amount)

-- name: has_spend
SELECT 1 FROM spend WHERE batch_id = :id LIMIT 1

-- name: batch_usage
SELECT r.queue AS queue, x.price_tier AS tier, SUM(x.input_tokens) AS input,
       SUM(COALESCE(x.cached_tokens, 0)) AS cached,
       SUM(COALESCE(x.cache_write_5m_tokens, 0)) AS write_5m,
       SUM(COALESCE(x.cache_write_1h_tokens, 0)) AS write_1h,
       SUM(COALESCE(x.output_tokens, 0)) AS output, COUNT(*) AS results
FROM results x
JOIN attempts a ON a.id = x.attempt_id
JOIN requests r ON r.id = x.request_id
WHERE a.batch_id = :id AND x.input_tokens IS NOT NULL AND x.usage_flag IS NULL
GROUP BY r.queue, x.price_tier

-- name: flagged_results
-- Succeeded results of a batch whose usage could not be read: their cost is not known.
SELECT r.id, r.queue
FROM results x
JOIN attempts a ON a.id = x.attempt_id
JOIN requests r ON r.id = x.request_id
WHERE a.batch_id = :id AND x.error_code IS NULL AND x.usage_flag IS NOT NULL

-- name: settle_all
UPDATE spend SET reserved = 0, spent = 0, unpriced = 0, settled_at = :now, prices = :prices
WHERE batch_id = :id

-- name: settle_queue
UPDATE spend SET spent = :spent, unpriced = :unpriced WHERE batch_id = :id AND queue = :queue

-- name: spend_queues
SELECT queue, COALESCE(worst, reserved + spent) FROM spend WHERE batch_id = :id ORDER BY queue

-- name: charge_duplicate
-- A duplicate provider batch of an intent, found: it may cost what the intent may, charged
-- (reserved now, settled when its results are read) to the queues and the day it is found.
INSERT INTO spend (batch_id, queue, day, reserved, worst, kind)
SELECT :dup, queue, :day, COALESCE(worst, reserved + spent), COALESCE(worst, reserved + spent),
       'duplicate'
FROM spend WHERE batch_id = :intent AND kind = 'planned'

-- name: hold_request
UPDATE requests SET state = 'held', reason = :reason, updated_at = :now WHERE id = :id AND state = 'queued'

-- name: release_held
UPDATE requests SET state = 'queued', reason = NULL, updated_at = :now WHERE state = 'held'

-- name: held_count
SELECT COUNT(*) FROM requests
WHERE state = 'held' AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)

-- name: held_reasons
SELECT reason, COUNT(*) FROM requests WHERE state = 'held'
GROUP BY reason ORDER BY MAX(updated_at) DESC, COUNT(*) DESC
