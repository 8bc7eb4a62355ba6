-- Queries of the batch engine: leases, packing, submission, ingest. Same conventions as
-- queries.sql. Rows of uncommitted imports are never packed.

-- name: acquire_lease
-- A lease or a claim carries its holder's token (workers.token, one per worker), so the
-- token changes whenever the holder does, and a fence tells the workers apart on any row.
INSERT INTO leases (name, holder, token, expires_at, since)
VALUES (:name, :holder, :token, :expires_at, :now)
ON CONFLICT (name) DO UPDATE
SET since = CASE WHEN leases.holder = excluded.holder THEN leases.since ELSE excluded.since END,
    token = excluded.token, holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at < :now
RETURNING token

-- name: release_lease
UPDATE leases SET expires_at = 0 WHERE name = :name AND holder = :holder

-- name: get_lease
SELECT holder, token, expires_at, since FROM leases WHERE name = :name

-- name: fence
-- The caller's claim on what it writes, and the engine lease that stands for a claim on
-- what nobody claims: each one's token, and the seconds left on it by the database's clock
-- (SQLite: one host, its clock passed as :now; PostgreSQL reads its own, postgres/queries.sql).
SELECT name, token, expires_at - :now AS seconds_left FROM leases WHERE name IN (:name, 'engine')

-- name: release_due_retries
UPDATE requests SET state = 'queued', updated_at = :now
WHERE state = 'retry_wait' AND not_before <= :now

-- name: ready_groups
SELECT provider, endpoint, model, COUNT(*) AS n FROM requests
WHERE state = 'queued'
  AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
GROUP BY provider, endpoint, model
ORDER BY MAX(priority) DESC, MIN(id)

-- name: ready_candidates
-- Each with its body: the packer writes the intent's file from what it read here (bodies
-- never change), so the bodies are read once a batch, not once to size and again to write.
SELECT id, (SELECT b.body FROM request_bodies b WHERE b.hash = requests.body_hash),
       inputs, text_bytes, priority
FROM requests
WHERE state = 'queued' AND provider = :provider AND endpoint = :endpoint AND model = :model
  AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
ORDER BY priority DESC, id
LIMIT :n

-- name: ready_candidates_after
SELECT id, (SELECT b.body FROM request_bodies b WHERE b.hash = requests.body_hash),
       inputs, text_bytes, priority
FROM requests
WHERE state = 'queued' AND provider = :provider AND endpoint = :endpoint AND model = :model
  AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
  AND priority <= :priority AND (priority < :priority OR id > :id)
ORDER BY priority DESC, id
LIMIT :n

-- name: insert_batch
INSERT INTO batches (provider, endpoint, model, state, request_count, input_bytes, est_tokens,
                     created_at, updated_at, nonce)
VALUES (:provider, :endpoint, :model, 'submitting', :request_count, :input_bytes, :est_tokens,
        :now, :now, :nonce)
RETURNING id

-- name: pack_requests
-- An intent's requests, in one statement; fewer rows changed than ids means someone else
-- packed or cancelled one meanwhile. (PostgreSQL: sql/postgres/bulk.sql, an array.)
UPDATE requests SET state = 'packed', updated_at = :now, reason = NULL
WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND state = 'queued'

-- name: insert_attempts
-- One attempt per request of an intent, its line the request's place in the list (SQLite's
-- json_each numbers the elements from 0), inserted in line order.
INSERT INTO attempts (request_id, batch_id, line, state, created_at)
SELECT CAST(value AS BIGINT), :batch_id, key + 1, 'packed', :now FROM json_each(:ids) ORDER BY key

-- name: batch_lines
-- A page of an intent's lines: those after line :after up to line :upto. A range, not
-- `LIMIT`: on a table not yet analyzed PostgreSQL sorts every later line of the batch for
-- each page (quadratic in the batch's size) where the range reads just the page.
SELECT a.id, r.endpoint, b.body, a.line FROM attempts a JOIN requests r ON r.id = a.request_id
JOIN request_bodies b ON b.hash = r.body_hash
WHERE a.batch_id = :batch_id AND a.line > :after AND a.line <= :upto ORDER BY a.line

-- name: batch_line_requests
-- (attempt id, request id) of an intent's lines in line order.
SELECT id, request_id FROM attempts WHERE batch_id = :batch_id ORDER BY line

-- name: next_batch_line
-- The first line of an intent after line :after (NULL: none), past a gap in its lines.
SELECT MIN(line) FROM attempts WHERE batch_id = :batch_id AND line > :after

-- name: record_upload
UPDATE batches SET input_file_id = :file_id, updated_at = :now WHERE id = :id

-- name: mark_upload_started
UPDATE batches SET upload_started_at = :now, updated_at = :now WHERE id = :id

-- name: mark_create_started
UPDATE batches SET create_started_at = :now, updated_at = :now WHERE id = :id

-- name: record_submitted
UPDATE batches
SET provider_batch_id = :provider_batch_id, input_file_id = :file_id, state = 'validating',
    submitted_at = :now, updated_at = :now, setbacks = 0, not_before = NULL,
    proof_wait_until = NULL
WHERE id = :id AND provider_batch_id IS NULL

-- name: submit_attempts
UPDATE attempts SET state = 'submitted' WHERE batch_id = :id AND state = 'packed'

-- name: submit_requests
UPDATE requests SET state = 'submitted', updated_at = :now
WHERE state = 'packed' AND id IN (SELECT request_id FROM attempts WHERE batch_id = :id)

-- name: open_batches
SELECT id, provider, endpoint, model, state, provider_batch_id, provider_status, input_file_id,
       output_file_id, error_file_id, request_count, created_at, upload_started_at,
       create_started_at, submitted_at, errors, est_tokens, completed_count, failed_count,
       cancel_requested_at, cancel_sent_at, intent_id, not_before, setbacks, download_tries,
       gone_checks, nonce, proof_wait_until, poll_at, poll_every
FROM batches WHERE state <> 'ingested' ORDER BY id

-- name: schedule_polls
UPDATE batches SET poll_at = :at, poll_every = :every
WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: next_run
SELECT next_at FROM schedules WHERE name = :name

-- name: set_next_run
INSERT INTO schedules (name, next_at) VALUES (:name, :at)
ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at

-- name: defer_batch
UPDATE batches SET not_before = :not_before WHERE id = :id

-- name: count_setbacks
UPDATE batches SET setbacks = setbacks + 1, not_before = :not_before, updated_at = :now
WHERE id = :id

-- name: count_download_tries
UPDATE batches SET download_tries = download_tries + 1, not_before = :not_before,
    updated_at = :now
WHERE id = :id

-- name: count_gone_checks
UPDATE batches SET gone_checks = gone_checks + 1, not_before = :not_before, updated_at = :now
WHERE id = :id

-- name: group_backoffs
SELECT provider, endpoint, model, strikes, cap, quota, not_before FROM group_backoffs

-- name: set_group_backoff
INSERT INTO group_backoffs (provider, endpoint, model, strikes, cap, quota, not_before)
VALUES (:provider, :endpoint, :model, :strikes, :cap, :quota, :not_before)
ON CONFLICT (provider, endpoint, model) DO UPDATE
SET strikes = excluded.strikes, cap = excluded.cap, quota = excluded.quota,
    not_before = excluded.not_before

-- name: clear_group_backoff
DELETE FROM group_backoffs WHERE provider = :provider AND endpoint = :endpoint AND model = :model

-- name: update_batch
UPDATE batches
SET state = :state, provider_status = :provider_status, completed_count = :completed,
    failed_count = :failed, output_file_id = :output_file_id, error_file_id = :error_file_id,
    errors = :errors, finished_at = :finished_at, updated_at = :now, gone_checks = 0
WHERE id = :id

-- name: waiting_attempts
SELECT a.id, a.request_id, r.attempts, r.expiries, r.rejections FROM attempts a
JOIN requests r ON r.id = a.request_id
WHERE a.id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND +a.batch_id = :batch_id
  AND a.state IN ('packed', 'submitted')

-- name: waiting_attempt_requests
-- waiting_attempts without the request's counters (what recording outcomes needs): one index
-- lookup a line instead of two.
SELECT a.id, a.request_id FROM attempts a
WHERE a.id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND +a.batch_id = :batch_id
  AND a.state IN ('packed', 'submitted')

-- name: attempts_in_batch
SELECT id FROM attempts WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND +batch_id = :batch_id

-- name: finish_attempt
UPDATE attempts SET state = :kind, outcome = :kind, error_code = :error_code,
    error_message = :error_message, finished_at = :now
WHERE id = :id

-- name: insert_result
-- The parameters in the order of a `Succeeded` tuple, then the rest (batching.RESULT_PARAMS):
-- a success's row is its tuple with five values added.
INSERT INTO results (attempt_id, status_code, provider_request_id, body, input_tokens,
                     output_tokens, cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
                     reasoning_tokens, usage_flag, price_tier, request_id, day, created_at,
                     error_code, error_message)
VALUES (:attempt_id, :status_code, :provider_request_id, :body, :input_tokens, :output_tokens,
        :cached_tokens, :cache_write_5m_tokens, :cache_write_1h_tokens, :reasoning_tokens,
        :usage_flag, :price_tier, :request_id, :day, :now, :error_code, :error_message)
ON CONFLICT (attempt_id) DO NOTHING

-- name: request_succeeded
-- Every succeeded request of an ingest chunk in one statement (the common case: nearly all).
UPDATE requests SET state = 'succeeded', reason = NULL, updated_at = :now
WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids)) AND state = 'submitted'

-- name: attempts_succeeded
UPDATE attempts SET state = 'succeeded', outcome = 'succeeded', error_code = NULL,
    error_message = NULL, finished_at = :now
WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: request_failed
UPDATE requests SET state = 'failed', attempts = attempts + 1, rejections = rejections + :rejection,
    reason = :reason, updated_at = :now
WHERE id = :id AND state IN ('submitted', 'packed')

-- name: request_retry
UPDATE requests SET state = 'retry_wait', attempts = attempts + 1, not_before = :not_before,
    reason = :reason, updated_at = :now
WHERE id = :id AND state = 'submitted'

-- name: request_requeue
UPDATE requests SET state = 'queued', expiries = expiries + :expiry, rejections = rejections + :rejection,
    reason = :reason, updated_at = :now
WHERE id = :id AND state IN ('submitted', 'packed')

-- name: request_cancelled
UPDATE requests SET state = 'cancelled', reason = :reason, updated_at = :now
WHERE id = :id AND state IN ('submitted', 'packed')

-- name: unfinished_attempts
SELECT a.id, a.request_id, a.line FROM attempts a
WHERE a.batch_id = :batch_id AND a.state IN ('packed', 'submitted') ORDER BY a.line

-- name: mark_ingested
UPDATE batches SET state = 'ingested', ingested_at = :now, updated_at = :now WHERE id = :id

-- name: batches_created_since
SELECT COUNT(*) FROM batches WHERE provider = :provider AND submitted_at >= :since

-- name: tokens_in_flight
SELECT COALESCE(SUM(est_tokens), 0) FROM batches
WHERE provider = :provider AND model = :model AND state IN ('submitting', 'validating', 'in_progress', 'finalizing')

-- name: unfinished_count
SELECT COUNT(*) FROM requests
WHERE state NOT IN ('succeeded', 'failed', 'cancelled')
  AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)
  AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')

-- name: any_unfinished
SELECT 1 FROM requests
WHERE state NOT IN ('succeeded', 'failed', 'cancelled')
  AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)
  AND import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
LIMIT 1

-- name: cancel_waiting
UPDATE requests SET state = 'cancelled', reason = 'cancelled by llmbatch cancel', updated_at = :now
WHERE state IN ('queued', 'retry_wait', 'held') AND id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))

-- name: batch_scope_counts
SELECT a.batch_id, COUNT(*) FROM attempts a
JOIN batches b ON b.id = a.batch_id
WHERE b.state <> 'ingested' AND a.state IN ('packed', 'submitted') AND a.request_id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))
GROUP BY a.batch_id

-- name: unfinished_in_batch
SELECT COUNT(*) FROM attempts WHERE batch_id = :id AND state IN ('packed', 'submitted')

-- name: request_batch_cancel
UPDATE batches SET cancel_requested_at = :now, updated_at = :now
WHERE id = :id AND cancel_requested_at IS NULL

-- name: mark_cancel_sent
UPDATE batches SET cancel_sent_at = :now, updated_at = :now WHERE id = :id

-- name: known_batch_ids
SELECT provider_batch_id FROM batches WHERE provider = :provider AND provider_batch_id IS NOT NULL

-- name: known_input_files
SELECT input_file_id FROM batches WHERE provider = :provider AND input_file_id IS NOT NULL

-- name: file_owners
-- Only batches sent from the file: an intent with none may be a copy's frozen one, whose
-- upload the original store goes on using.
SELECT input_file_id, COALESCE(intent_id, id) AS intent FROM batches
WHERE provider = :provider AND input_file_id IS NOT NULL AND provider_batch_id IS NOT NULL

-- name: attempt_span
SELECT MIN(id) AS low, MAX(id) AS high FROM attempts WHERE batch_id = :id

-- name: batch_of_attempt
SELECT batch_id FROM attempts WHERE id = :id

-- name: adopt_batch
INSERT INTO batches (provider, endpoint, model, state, provider_batch_id, provider_status,
                     input_file_id, output_file_id, error_file_id, request_count, intent_id,
                     created_at, submitted_at, updated_at, nonce)
VALUES (:provider, :endpoint, :model, :state, :provider_batch_id, :state, :input_file_id,
        :output_file_id, :error_file_id, :request_count, :intent_id, :now, :now, :now, :nonce)
ON CONFLICT (provider_batch_id, provider) DO NOTHING

-- name: add_cost_totals
-- Add the results of these attempts to their pricing aggregates (cost_totals), in the
-- transaction that inserted them; the same sums and keys as cost_groups.
INSERT INTO cost_totals (day, queue, provider, model, price_tier, endpoint, requests, succeeded,
                         input_tokens, cached_tokens, cache_write_5m_tokens,
                         cache_write_1h_tokens, output_tokens, flagged)
SELECT res.day, r.queue, r.provider, r.model, res.price_tier, MIN(r.endpoint), COUNT(*),
       SUM(CASE WHEN res.error_code IS NULL THEN 1 ELSE 0 END),
       COALESCE(SUM(res.input_tokens), 0), COALESCE(SUM(res.cached_tokens), 0),
       COALESCE(SUM(res.cache_write_5m_tokens), 0), COALESCE(SUM(res.cache_write_1h_tokens), 0),
       COALESCE(SUM(res.output_tokens), 0),
       SUM(CASE WHEN res.usage_flag IS NOT NULL THEN 1 ELSE 0 END)
FROM results res JOIN requests r ON r.id = res.request_id
WHERE res.attempt_id IN (SELECT CAST(value AS BIGINT) FROM json_each(:ids))
GROUP BY res.day, r.queue, r.provider, r.model, res.price_tier
ON CONFLICT (day, queue, provider, model, price_tier) DO UPDATE SET
    endpoint = CASE WHEN excluded.endpoint < cost_totals.endpoint THEN excluded.endpoint
                    ELSE cost_totals.endpoint END,
    requests = cost_totals.requests + excluded.requests,
    succeeded = cost_totals.succeeded + excluded.succeeded,
    input_tokens = cost_totals.input_tokens + excluded.input_tokens,
    cached_tokens = cost_totals.cached_tokens + excluded.cached_tokens,
    cache_write_5m_tokens = cost_totals.cache_write_5m_tokens + excluded.cache_write_5m_tokens,
    cache_write_1h_tokens = cost_totals.cache_write_1h_tokens + excluded.cache_write_1h_tokens,
    output_tokens = cost_totals.output_tokens + excluded.output_tokens,
    flagged = cost_totals.flagged + excluded.flagged

-- name: fail_unsendable
UPDATE requests SET state = 'failed', reason = :reason, updated_at = :now WHERE id = :id AND state = 'queued'

-- name: scope_named
-- The requests a `cancel` names by custom id (in a queue, or in any), of a batch if one is
-- named: one index lookup per queue and custom id.
SELECT r.id FROM requests r
WHERE r.queue IN (SELECT queue FROM imports WHERE CAST(:queue AS TEXT) IS NULL OR queue = :queue)
  AND r.custom_id IN (SELECT value FROM json_each(:custom_ids))
  AND (CAST(:batch AS TEXT) IS NULL OR r.id IN (
        SELECT a.request_id FROM attempts a JOIN batches b ON b.id = a.batch_id
        WHERE CAST(b.id AS TEXT) = :batch OR b.provider_batch_id = :batch))
  AND r.import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')

-- name: scope_of_batch
-- The requests of a batch (by our id or the provider's), in a queue if one is named.
SELECT r.id FROM requests r
WHERE r.id IN (
        SELECT a.request_id FROM attempts a JOIN batches b ON b.id = a.batch_id
        WHERE CAST(b.id AS TEXT) = :batch OR b.provider_batch_id = :batch)
  AND (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue)
  AND r.import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')

-- name: scope_of_queue
-- The requests of a queue, or of every queue.
SELECT r.id FROM requests r
WHERE (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue)
  AND r.import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')

-- name: intent_of_adopted
-- What an adopted duplicate takes from its intent (its lines carry the intent's nonce).
SELECT endpoint, model, nonce FROM batches WHERE id = :id

-- name: batch_by_provider_id
-- A batch id is unique at its provider only (migration 0014).
SELECT id FROM batches WHERE provider_batch_id = :provider_batch_id AND provider = :provider

-- name: batch_state
-- The state a batch is in, read in the transaction that moves it (store/batching.py
-- _move_batch checks the move against states.BATCH_TRANSITIONS).
SELECT state FROM batches WHERE id = :id
