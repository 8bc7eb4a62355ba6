-- Queries a person runs to look around and tidy up: the results export, lists of queues and
-- batches, progress at the provider, retry, purge. Same conventions as queries.sql.

-- name: results_high
-- The newest result: an export reads up to it, and prints it as the cursor to resume after.
SELECT COALESCE(MAX(id), 0) FROM results

-- name: export_recorded
-- The latest result of each finished request, recorded in (after, upto], in recorded order.
SELECT res.id AS cursor, r.custom_id, r.state, r.provider, res.status_code,
       res.provider_request_id, res.body, res.error_code, res.error_message, res.input_tokens,
       res.output_tokens, res.attempt_id, r.id AS request_id, r.model, r.endpoint,
       res.cached_tokens, res.cache_write_5m_tokens,
       res.cache_write_1h_tokens, res.created_at AS recorded_at
FROM results res JOIN requests r ON r.id = res.request_id
WHERE res.id > :after AND res.id <= :upto
  AND r.state IN ('succeeded', 'failed', 'cancelled')
  AND (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue)
  AND (CAST(:state AS TEXT) IS NULL OR r.state = :state)
  AND NOT EXISTS (SELECT 1 FROM results x
                  WHERE x.request_id = res.request_id AND x.id > res.id AND x.id <= :upto)
ORDER BY res.id
LIMIT :n

-- name: export_input
-- The same rows in input order (enqueue order, then line), paged by request id.
SELECT res.id AS cursor, r.custom_id, r.state, r.provider, res.status_code,
       res.provider_request_id, res.body, res.error_code, res.error_message, res.input_tokens,
       res.output_tokens, res.attempt_id, r.id AS request_id, r.model, r.endpoint,
       res.cached_tokens, res.cache_write_5m_tokens,
       res.cache_write_1h_tokens, res.created_at AS recorded_at
FROM requests r JOIN results res ON res.request_id = r.id
WHERE r.id > :after_request AND res.id > :after AND res.id <= :upto
  AND r.state IN ('succeeded', 'failed', 'cancelled')
  AND (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue)
  AND (CAST(:state AS TEXT) IS NULL OR r.state = :state)
  AND NOT EXISTS (SELECT 1 FROM results x
                  WHERE x.request_id = res.request_id AND x.id > res.id AND x.id <= :upto)
ORDER BY r.id
LIMIT :n

-- name: local_outcome_attempts
-- A request that ends without a batch (cancelled while waiting, too large for any batch)
-- still gets an attempt and a result, so the export has one line for every request. Its
-- outcome is 'unsent': nothing reached a provider, so it costs nothing.
INSERT INTO attempts (request_id, batch_id, line, state, outcome, error_code, error_message,
                      created_at, finished_at)
SELECT id, NULL, NULL, :outcome, 'unsent', :code, :message, :now, :now FROM requests
WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND state IN (SELECT value FROM json_each(:states))

-- name: local_outcome_results
INSERT INTO results (attempt_id, request_id, error_code, error_message, day, created_at)
SELECT a.id, a.request_id, a.error_code, a.error_message, :day, :now FROM attempts a
WHERE a.request_id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND a.batch_id IS NULL AND a.state IN ('cancelled', 'failed')
  AND NOT EXISTS (SELECT 1 FROM results x WHERE x.attempt_id = a.id)
ORDER BY a.request_id

-- name: queue_counts
SELECT queue, state, COUNT(*), MIN(created_at), MAX(updated_at) FROM requests
WHERE import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
GROUP BY queue, state

-- name: queue_has_requests
SELECT 1 FROM requests
WHERE queue = :queue AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
LIMIT 1

-- name: queue_spend
-- Usage recorded per queue, kept by purge (report and budgets read it).
SELECT queue, SUM(requests), MAX(day) FROM cost_totals GROUP BY queue

-- name: batch_list
SELECT b.id, b.provider, b.model, b.state, b.provider_batch_id, b.provider_status,
       b.request_count, b.completed_count AS completed, b.failed_count AS failed, b.created_at,
       b.submitted_at, b.finished_at, b.ingested_at, b.cancel_requested_at, b.updated_at,
       b.intent_id, p.model AS provider_model
FROM batches b LEFT JOIN provider_usage p ON p.batch_id = b.id
WHERE (:open = 0 OR b.state <> 'ingested')
  AND (CAST(:queue AS TEXT) IS NULL OR EXISTS (
        SELECT 1 FROM attempts a JOIN requests r ON r.id = a.request_id
        WHERE a.batch_id = COALESCE(b.intent_id, b.id) AND r.queue = :queue))
ORDER BY b.id DESC
LIMIT :n

-- name: batch_progress
-- Open batches with what the provider last said was done and what is already read back,
-- and how many of their requests are in the queue asked about (all: every request).
SELECT b.id, b.provider, b.provider_batch_id, b.state, b.provider_status,
       b.request_count AS requests, b.completed_count + b.failed_count AS done_at_provider,
       b.submitted_at, b.updated_at AS seen_at,
       (SELECT COUNT(*) FROM attempts a
        WHERE a.batch_id = COALESCE(b.intent_id, b.id) AND a.state NOT IN ('packed', 'submitted'))
         AS read_back,
       (SELECT COUNT(*) FROM attempts a JOIN requests r ON r.id = a.request_id
        WHERE a.batch_id = COALESCE(b.intent_id, b.id)
          AND (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue)) AS in_scope
FROM batches b
WHERE b.state <> 'ingested'
ORDER BY b.id

-- name: retry_failed
UPDATE requests SET state = 'queued', attempts = 0, rejections = 0, not_before = NULL,
       reason = 'sent again by llmbatch retry', updated_at = :now
WHERE state = 'failed' AND id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: count_failed
SELECT COUNT(*) FROM requests WHERE state = 'failed' AND id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: purge_blockers
-- What keeps a queue from being purged: unfinished requests, and finished ones whose batch
-- is still being read back.
SELECT (SELECT COUNT(*) FROM requests
        WHERE queue = :queue AND state NOT IN ('succeeded', 'failed', 'cancelled')),
       (SELECT COUNT(*) FROM attempts a JOIN requests r ON r.id = a.request_id
        JOIN batches b ON b.id = a.batch_id
        WHERE r.queue = :queue AND b.state <> 'ingested')

-- name: purge_counts
SELECT COUNT(*), (SELECT COUNT(*) FROM results x JOIN requests r ON r.id = x.request_id
                  WHERE r.queue = :queue),
       (SELECT COUNT(*) FROM attempts a JOIN requests r ON r.id = a.request_id
        WHERE r.queue = :queue)
FROM requests WHERE queue = :queue

-- name: purge_page
SELECT id FROM requests WHERE queue = :queue AND state IN ('succeeded', 'failed', 'cancelled')
ORDER BY id LIMIT :n

-- name: purge_results
DELETE FROM results WHERE request_id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: purge_attempts
DELETE FROM attempts WHERE request_id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: purge_requests
DELETE FROM requests WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND state IN ('succeeded', 'failed', 'cancelled')

-- name: purge_imports
DELETE FROM imports WHERE queue = :queue AND state <> 'loading'
  AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.import_id = imports.id)
