-- Queries of hard budgets: reservations with the intent, settlement at ingest, holds.
-- Same conventions as queries.sql. Amounts are integers of 1e-6 USD.

-- name: budget_lines
SELECT id, queue, text_bytes, body FROM requests WHERE id IN ({ids})

-- name: upsert_budget
INSERT INTO budgets (queue, period, limit_micro, updated_at)
VALUES (:queue, :period, :limit_micro, :now)
ON CONFLICT (queue, period) DO UPDATE
SET limit_micro = excluded.limit_micro, updated_at = excluded.updated_at

-- name: committed
SELECT COALESCE(SUM(reserved + spent), 0) FROM spend
WHERE day >= :first AND day < :end AND (CAST(:queue AS TEXT) = '*' OR queue = :queue)

-- name: insert_spend
INSERT INTO spend (batch_id, queue, day, reserved) VALUES (?, ?, ?, ?)

-- name: has_spend
SELECT 1 FROM spend WHERE batch_id = :id LIMIT 1

-- name: batch_usage
SELECT r.queue, x.price_tier, SUM(x.input_tokens), SUM(COALESCE(x.cached_tokens, 0)),
       SUM(COALESCE(x.cache_write_5m_tokens, 0)), SUM(COALESCE(x.cache_write_1h_tokens, 0)),
       SUM(COALESCE(x.output_tokens, 0))
FROM results x
JOIN attempts a ON a.id = x.attempt_id
JOIN requests r ON r.id = x.request_id
WHERE a.batch_id = :id AND x.input_tokens IS NOT NULL AND x.usage_flag IS NULL
GROUP BY r.queue, x.price_tier

-- name: settle_all
UPDATE spend SET reserved = 0, spent = 0, settled_at = :now WHERE batch_id = :id

-- name: settle_queue
UPDATE spend SET spent = ? WHERE batch_id = ? AND queue = ?

-- name: hold_request
UPDATE requests SET state = 'held', reason = ?, updated_at = ? WHERE id = ? AND state = 'queued'

-- name: release_held
UPDATE requests SET state = 'queued', reason = NULL, updated_at = :now WHERE state = 'held'

-- name: held_count
SELECT COUNT(*) FROM requests
WHERE state = 'held' AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)

-- name: budget_rows
SELECT queue, period, limit_micro, updated_at FROM budgets ORDER BY queue, period

-- name: held_reasons
SELECT reason, COUNT(*) FROM requests WHERE state = 'held'
GROUP BY reason ORDER BY MAX(updated_at) DESC, COUNT(*) DESC
