-- Queries of callers waiting for their requests (the Python clients): one statement per
-- interval for every waiting call, and a lookup by custom_id. Same conventions as queries.sql.

-- name: watch
-- Everything waiting calls of one queue need, in one statement. It scans the next :n results
-- after :after (any queue, by id: the plan cannot go quadratic on stale statistics) and gives
-- those of this queue that are the newest of a finished request ('result'); one 'scanned'
-- row with the highest id scanned (cursor) and how many (request_id); and the requests a
-- budget holds whose hold was written at or after :held_after ('held').
WITH scanned AS (
    SELECT id, request_id FROM results WHERE id > :after ORDER BY id LIMIT :n
)
SELECT 'result' AS kind, res.id AS cursor, r.custom_id, r.state, r.provider,
       res.status_code, res.provider_request_id, res.body, res.error_code,
       res.error_message, res.input_tokens, res.output_tokens, res.attempt_id,
       r.id AS request_id, r.model, r.endpoint, res.cached_tokens,
       res.cache_write_5m_tokens, res.cache_write_1h_tokens, res.created_at AS recorded_at
FROM scanned s
JOIN results res ON res.id = s.id
JOIN requests r ON r.id = s.request_id
WHERE r.queue = :queue AND r.state IN ('succeeded', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM results x WHERE x.request_id = s.request_id AND x.id > s.id)
UNION ALL
SELECT 'scanned', COALESCE(MAX(id), :after), '', '', '', NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, 0, COUNT(*), '', '', NULL, NULL, NULL, 0
FROM scanned
UNION ALL
SELECT 'held', 0, r.custom_id, r.state, r.provider, NULL, NULL, NULL, 'held', r.reason, NULL,
       NULL, 0, r.id, r.model, r.endpoint, NULL, NULL, NULL, r.updated_at
FROM requests r
WHERE r.queue = :queue AND r.state = 'held' AND r.updated_at >= :held_after

-- name: lookup
-- Requests of a queue by custom_id (committed imports only), each with its newest result.
SELECT r.custom_id, r.state, r.reason, r.body_hash, res.id AS cursor, r.provider,
       res.status_code, res.provider_request_id, res.body, res.error_code, res.error_message,
       res.input_tokens, res.output_tokens, res.attempt_id, r.id AS request_id, r.model,
       r.endpoint, res.cached_tokens, res.cache_write_5m_tokens,
       res.cache_write_1h_tokens, res.created_at AS recorded_at
FROM requests r
LEFT JOIN results res ON res.id = (SELECT MAX(x.id) FROM results x WHERE x.request_id = r.id)
WHERE r.queue = :queue AND r.custom_id IN (SELECT value FROM json_each(:ids))
  AND r.import_id IN (SELECT id FROM imports WHERE state = 'committed')

-- name: queue_requests
-- A queue's requests in given states, for estimates, paged by id.
SELECT r.id, r.custom_id, r.provider, r.endpoint, r.model, b.body
FROM requests r JOIN request_bodies b ON b.hash = r.body_hash
WHERE r.queue = :queue AND r.id > :after AND r.state IN (SELECT value FROM json_each(:states))
  AND r.import_id IN (SELECT id FROM imports WHERE state = 'committed')
ORDER BY r.id
LIMIT :n
