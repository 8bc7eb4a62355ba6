-- Queries shared by every store, named by `-- name:` lines. Parameters are `:name`
-- (named; a list is one parameter, read by `json_each`); sqlfiles.py derives a driver's style.
-- Rows of an import that has not committed are invisible to everything but the import.

-- name: insert_import
INSERT INTO imports (queue, source, state, owner, low_water, started_at, heartbeat_at)
VALUES (:queue, :source, 'loading', :owner, :low_water, :now, :now)
RETURNING id

-- name: max_request_id
SELECT COALESCE(MAX(id), 0) AS id FROM requests

-- name: insert_request
-- A store Row (types.Row) as it is but its body, which goes to request_bodies (insert_body).
INSERT INTO requests (queue, custom_id, import_id, line, provider, endpoint, model,
                      body_hash, priority, deadline, text_chars, text_bytes, inputs,
                      created_at, updated_at)
VALUES (:queue, :custom_id, :import_id, :line, :provider, :endpoint, :model, :body_hash,
        :priority, :deadline, :text_chars, :text_bytes, :inputs, :created_at, :updated_at)
ON CONFLICT (queue, custom_id) DO NOTHING

-- name: insert_body
-- A body is written once: a request with the same hash shares the row already there.
INSERT INTO request_bodies (hash, body) VALUES (:body_hash, :body) ON CONFLICT (hash) DO NOTHING

-- name: delete_orphan_bodies
-- Bodies no request refers to any more (after a purge or a failed import's clean-up). One
-- pass over both tables (a hash join on PostgreSQL, an automatic index on SQLite).
DELETE FROM request_bodies WHERE hash IN (
    SELECT b.hash FROM request_bodies b LEFT JOIN requests r ON r.body_hash = b.hash
    WHERE r.id IS NULL)

-- name: heartbeat_import
UPDATE imports SET heartbeat_at = :now, lines = :lines WHERE id = :id AND state = 'loading'

-- name: commit_import
UPDATE imports
SET state = 'committed', lines = :lines, added = :added, unchanged = :unchanged,
    rejected = :rejected, finished_at = :now, heartbeat_at = :now
WHERE id = :id AND state = 'loading'

-- name: fail_import
UPDATE imports SET state = 'failed', error = :error, finished_at = :now
WHERE id = :id AND state = 'loading'

-- name: get_import
SELECT id, queue, source, state, owner, low_water, lines, added, unchanged, rejected, error,
       started_at, heartbeat_at, finished_at
FROM imports WHERE id = :id

-- name: loading_imports
SELECT id, owner, heartbeat_at FROM imports WHERE state = 'loading'

-- name: failed_imports_with_rows
SELECT i.id FROM imports i
WHERE i.state = 'failed'
  AND EXISTS (SELECT 1 FROM requests r WHERE r.id > i.low_water AND r.import_id = i.id)

-- name: delete_import_rows
-- Only a failed import's rows: a failed import never commits, so this cannot race a commit.
DELETE FROM requests WHERE id IN (
    SELECT id FROM requests WHERE id > :low_water AND import_id = :id
      AND EXISTS (SELECT 1 FROM imports WHERE id = :id AND state = 'failed')
    ORDER BY id LIMIT :n)

-- name: insert_event
INSERT INTO events (at, kind, import_id, batch_id, detail)
VALUES (:now, :kind, :import_id, :batch_id, :detail)

-- name: counts
SELECT queue, provider, model, state, COUNT(*) AS n FROM requests
WHERE import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
GROUP BY queue, provider, model, state
ORDER BY queue, provider, model, state

-- name: counts_of_queue
-- one queue's rows only, through the (queue, custom_id) index: `wait -q` reads it every tick
SELECT queue, provider, model, state, COUNT(*) AS n FROM requests
WHERE queue = :queue AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
GROUP BY queue, provider, model, state
ORDER BY queue, provider, model, state

-- name: get_request
SELECT id, queue, custom_id, provider, endpoint, model,
       (SELECT b.body FROM request_bodies b WHERE b.hash = requests.body_hash) AS body,
       state, priority, deadline, text_chars, text_bytes, inputs, attempts, expiries,
       not_before, reason, created_at, updated_at, import_id, line
FROM requests
WHERE custom_id = :custom_id AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)
  AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
ORDER BY queue

-- name: request_attempts
-- with what the provider says of the attempt's whole batch (its Batch object: model, usage)
SELECT a.id, a.batch_id, a.line, a.state, a.outcome, a.error_code, a.error_message,
       a.created_at, a.finished_at, b.provider_batch_id, p.model AS provider_model,
       p.input_tokens AS provider_input_tokens, p.output_tokens AS provider_output_tokens
FROM attempts a LEFT JOIN batches b ON b.id = a.batch_id
LEFT JOIN provider_usage p ON p.batch_id = a.batch_id
WHERE a.request_id = :request_id ORDER BY a.id

-- name: request_result
SELECT id, attempt_id, status_code, provider_request_id, body, error_code, error_message,
       input_tokens, output_tokens, created_at
FROM results WHERE request_id = :request_id ORDER BY id DESC LIMIT 1

-- name: recent_events
SELECT id, at, kind, import_id, batch_id, detail FROM events ORDER BY id DESC LIMIT :n

-- name: get_meta
SELECT value FROM meta WHERE key = :key

-- name: set_meta
INSERT INTO meta (key, value) VALUES (:key, :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value

-- name: usage_summary
SELECT r.provider AS provider, r.model AS model, COUNT(*) AS results,
       COALESCE(SUM(res.input_tokens), 0) AS input_tokens,
       COALESCE(SUM(res.output_tokens), 0) AS output_tokens,
       SUM(CASE WHEN res.error_code IS NULL THEN 1 ELSE 0 END) AS succeeded
FROM results res JOIN requests r ON r.id = res.request_id
JOIN attempts a ON a.id = res.attempt_id
WHERE (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue) AND COALESCE(a.outcome, '') NOT IN ('cancelled', 'unsent')
GROUP BY r.provider, r.model
ORDER BY r.provider, r.model

-- name: batch_overview
SELECT id, provider, model, state, provider_batch_id, provider_status, request_count,
       completed_count, failed_count, created_at, submitted_at, finished_at,
       cancel_requested_at, updated_at,
       (SELECT p.model FROM provider_usage p WHERE p.batch_id = b.id) AS provider_model
FROM batches b
WHERE (state <> 'ingested' OR id IN (
        SELECT id FROM batches WHERE state = 'ingested'
          AND (CAST(:queue AS TEXT) IS NULL OR EXISTS (
                SELECT 1 FROM attempts a JOIN requests r ON r.id = a.request_id
                WHERE a.batch_id = COALESCE(batches.intent_id, batches.id) AND r.queue = :queue))
        ORDER BY id DESC LIMIT :recent))
  AND (CAST(:queue AS TEXT) IS NULL OR EXISTS (
        SELECT 1 FROM attempts a JOIN requests r ON r.id = a.request_id
        WHERE a.batch_id = COALESCE(b.intent_id, b.id) AND r.queue = :queue))
ORDER BY id

-- name: deadline_risk
SELECT
    SUM(CASE WHEN deadline < :now THEN 1 ELSE 0 END) AS missed,
    SUM(CASE WHEN deadline >= :now AND deadline < :horizon THEN 1 ELSE 0 END) AS at_risk
FROM requests
WHERE deadline IS NOT NULL AND state NOT IN ('succeeded', 'failed', 'cancelled')
  AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)

-- name: cost_groups
-- Usage per pricing aggregate: provider, model, tier key, UTC day, queue (integer and short
-- keys: this GROUP BY is the whole cost of a report over a million results).
SELECT r.provider AS provider, r.model AS model, MIN(r.endpoint) AS endpoint,
       res.price_tier AS price_tier, res.day AS day, r.queue AS queue, COUNT(*) AS requests,
       SUM(CASE WHEN res.error_code IS NULL THEN 1 ELSE 0 END) AS succeeded,
       COALESCE(SUM(res.input_tokens), 0) AS input_tokens,
       COALESCE(SUM(res.cached_tokens), 0) AS cached_tokens,
       COALESCE(SUM(res.cache_write_5m_tokens), 0) AS cache_write_5m_tokens,
       COALESCE(SUM(res.cache_write_1h_tokens), 0) AS cache_write_1h_tokens,
       COALESCE(SUM(res.output_tokens), 0) AS output_tokens,
       SUM(CASE WHEN res.usage_flag IS NOT NULL THEN 1 ELSE 0 END) AS flagged
FROM results res JOIN requests r ON r.id = res.request_id
JOIN attempts a ON a.id = res.attempt_id
WHERE res.created_at >= :since AND res.created_at < :until
  AND (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue)
  AND COALESCE(a.outcome, '') NOT IN ('cancelled', 'unsent')
GROUP BY res.day, res.price_tier, r.model, r.queue, r.provider

-- name: cost_totals
-- cost_groups over whole UTC days [since_day, until_day), from the running totals.
SELECT provider, model, endpoint, price_tier, day, queue, requests, succeeded, input_tokens,
       cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, flagged
FROM cost_totals
WHERE day >= :since_day AND day < :until_day
  AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)

-- name: clash_rows
-- The rows already queued under these custom_ids (an import's clashes), with their import's state.
SELECT r.custom_id AS custom_id, r.body_hash AS body_hash, r.import_id AS import_id,
       r.line AS line, i.state AS import_state
FROM requests r
JOIN imports i ON i.id = r.import_id
WHERE r.queue = :queue AND r.custom_id IN (SELECT value FROM json_each(:ids))
