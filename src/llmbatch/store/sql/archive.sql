-- Archives of ingested batches and the webhook outbox (store/archive.py, migration 0008).

-- name: archive_add
-- A batch whose files are to be archived (again: harmless, the first row stands).
INSERT INTO archives (batch_id, state, not_before, created_at)
VALUES (:batch_id, 'pending', :now, :now)
ON CONFLICT (batch_id) DO NOTHING

-- name: archive_due
-- Archives to write now: only of batches already ingested (a row written before a crash
-- ends the ingest waits until the batch is ingested again).
SELECT a.batch_id, a.tries FROM archives a JOIN batches b ON b.id = a.batch_id
WHERE a.state = 'pending' AND a.not_before <= :now AND b.state = 'ingested'
ORDER BY a.not_before, a.batch_id
LIMIT :n

-- name: archive_done
UPDATE archives SET state = 'done', done_at = :now, from_store = :from_store,
       location = :location, last_error = NULL
WHERE batch_id = :batch_id

-- name: archive_failed
UPDATE archives SET tries = tries + 1, not_before = :not_before, last_error = :error
WHERE batch_id = :batch_id AND state = 'pending'

-- name: archive_waiting
-- Archives not yet written, the oldest first, with what went wrong last (for status).
SELECT batch_id, tries, not_before, last_error FROM archives
WHERE state = 'pending' ORDER BY batch_id LIMIT :n

-- name: batch_attempt_map
-- Each attempt a batch carried, with the user's queue and custom_id (for the manifest).
SELECT a.id AS attempt_id, r.queue, r.custom_id FROM attempts a
JOIN requests r ON r.id = a.request_id
WHERE a.batch_id = :batch_id AND a.id > :after
ORDER BY a.id
LIMIT :n

-- name: batch_custom_ids
-- The custom_id of each attempt a batch carried within a span of attempt ids (an archive's
-- failures, when its attempts.jsonl was written as the batch was sent).
SELECT a.id AS attempt_id, r.custom_id FROM attempts a
JOIN requests r ON r.id = a.request_id
WHERE a.batch_id = :batch_id AND a.id >= :first AND a.id <= :last
ORDER BY a.id

-- name: batch_result_rows
-- The results recorded for the attempts a batch carried (a retried attempt has none).
-- The columns are ResultRow's fields in order (rows are built positionally).
SELECT res.id AS cursor, r.custom_id,
       CASE WHEN a.outcome IN ('succeeded', 'failed', 'cancelled') THEN a.outcome ELSE r.state END
         AS state,
       r.provider, res.status_code, res.provider_request_id, res.body, res.error_code,
       res.error_message, res.input_tokens, res.output_tokens, res.attempt_id,
       r.id AS request_id, r.model, r.endpoint, res.cached_tokens, res.cache_write_5m_tokens,
       res.cache_write_1h_tokens, res.created_at AS recorded_at
FROM attempts a JOIN results res ON res.attempt_id = a.id JOIN requests r ON r.id = a.request_id
WHERE a.batch_id = :batch_id AND a.id > :after
ORDER BY a.id
LIMIT :n

-- name: batch_result_count
-- How many results are recorded for the attempts a batch carried (an archive's results.jsonl
-- written during ingest is used only when it holds every one of them).
SELECT COUNT(*) FROM attempts a JOIN results res ON res.attempt_id = a.id
WHERE a.batch_id = :batch_id

-- name: batch_queues
-- The queues a batch's requests belong to, each with its highest request id and how many of
-- its requests are not finished (a queue-finished webhook is due when that is 0).
SELECT r.queue, MAX(r.id) AS high,
       (SELECT COUNT(*) FROM requests u
        WHERE u.queue = r.queue AND u.state NOT IN ('succeeded', 'failed', 'cancelled')
          AND u.import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')) AS unfinished
FROM (SELECT DISTINCT a.request_id FROM attempts a WHERE a.batch_id = :batch_id) x
JOIN requests r ON r.id = x.request_id
GROUP BY r.queue
ORDER BY r.queue

-- name: queue_summary
-- A queue's requests by state and its highest request id (a queue-finished payload).
SELECT state, COUNT(*) AS n, MAX(id) AS high FROM requests WHERE queue = :queue GROUP BY state

-- name: outbox_add
INSERT INTO outbox (event_id, kind, batch_id, payload, not_before, created_at)
VALUES (:event_id, :kind, :batch_id, :payload, :now, :now)
ON CONFLICT (event_id) DO NOTHING

-- name: outbox_due
-- Events to deliver now, oldest first; one tied to a batch only once that batch is ingested.
SELECT o.id, o.event_id, o.kind, o.payload, o.tries, o.created_at FROM outbox o
WHERE o.delivered_at IS NULL AND o.not_before <= :now
  AND (o.batch_id IS NULL
       OR EXISTS (SELECT 1 FROM batches b WHERE b.id = o.batch_id AND b.state = 'ingested'))
ORDER BY o.not_before, o.id
LIMIT :n

-- name: outbox_delivered
UPDATE outbox SET delivered_at = :now, last_error = NULL WHERE id = :id

-- name: outbox_failed
UPDATE outbox SET tries = tries + 1, not_before = :not_before, last_error = :error
WHERE id = :id AND delivered_at IS NULL

-- name: outbox_waiting
SELECT COUNT(*), MIN(not_before) FROM outbox WHERE delivered_at IS NULL

-- name: archive_batch
-- What an archive needs of its batch.
SELECT b.id, b.provider, b.endpoint, b.model, b.state, b.provider_status, b.provider_batch_id,
       b.intent_id, b.input_file_id, b.output_file_id, b.error_file_id, b.request_count,
       b.completed_count, b.failed_count,
       COALESCE(i.nonce, b.nonce) AS nonce
FROM batches b LEFT JOIN batches i ON i.id = b.intent_id
WHERE b.id = :id
