-- PostgreSQL's own set-based statements for packing and ingest (part of its dialect's
-- queries, sqlfiles.dialect_queries), in our parameter style. An intent's request ids travel as one BIGINT[] parameter; an
-- ingest chunk's outcomes are COPYed into a per-session staging table and applied with one
-- statement per table.

-- name: pack_requests
UPDATE requests SET state = 'packed', updated_at = :now, reason = NULL
WHERE id = ANY(CAST(:ids AS BIGINT[])) AND state = 'queued'

-- name: insert_attempts
INSERT INTO attempts (request_id, batch_id, line, state, created_at)
SELECT t.request_id, :batch_id, t.line, 'packed', :now
FROM unnest(CAST(:ids AS BIGINT[])) WITH ORDINALITY AS t (request_id, line)
ORDER BY t.line

-- name: outcome_staging
CREATE TEMP TABLE IF NOT EXISTS outcome_staging (
    attempt_id            BIGINT,
    request_id            BIGINT,
    kind                  TEXT,
    status_code           BIGINT,
    provider_request_id   TEXT,
    body                  BYTEA,
    error_code            TEXT,
    error_message         TEXT,
    input_tokens          BIGINT,
    output_tokens         BIGINT,
    cached_tokens         BIGINT,
    cache_write_5m_tokens BIGINT,
    cache_write_1h_tokens BIGINT,
    reasoning_tokens      BIGINT,
    usage_flag            TEXT,
    price_tier            BIGINT,
    not_before            DOUBLE PRECISION,
    charge_expiry         BIGINT,
    charge_rejection      BIGINT,
    reason                TEXT
) ON COMMIT DELETE ROWS

-- name: copy_outcomes
COPY outcome_staging FROM STDIN (FORMAT BINARY)

-- name: finish_staged_attempts
-- The ids again as an array: the planner then reads the chunk's attempts by key instead of
-- hashing the whole table (a staging table is never analyzed: it guesses its size).
UPDATE attempts a SET state = s.kind, outcome = s.kind, error_code = s.error_code,
    error_message = s.error_message, finished_at = :now
FROM outcome_staging s WHERE a.id = s.attempt_id AND a.id = ANY(CAST(:ids AS BIGINT[]))

-- name: insert_staged_results
-- a cancelled request gets a result too (the export lists it), but costs nothing
INSERT INTO results (attempt_id, request_id, status_code, provider_request_id, body, error_code,
                     error_message, input_tokens, output_tokens, cached_tokens,
                     cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, usage_flag,
                     price_tier, day, created_at)
SELECT attempt_id, request_id, status_code, provider_request_id, body, error_code, error_message,
       input_tokens, output_tokens, cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
       reasoning_tokens, usage_flag, price_tier, :day, :now
FROM outcome_staging WHERE kind IN ('succeeded', 'failed', 'cancelled') ORDER BY attempt_id
ON CONFLICT (attempt_id) DO NOTHING

-- name: add_staged_cost_totals
-- engine.sql's add_cost_totals over the staged chunk: the succeeded and failed outcomes are
-- the results just inserted (a waiting attempt has none yet), so their figures are read from
-- the staging table, not looked up again in `results` by an id list.
INSERT INTO cost_totals (day, queue, provider, model, price_tier, endpoint, requests, succeeded,
                         input_tokens, cached_tokens, cache_write_5m_tokens,
                         cache_write_1h_tokens, output_tokens, flagged)
SELECT :day, r.queue, r.provider, r.model, s.price_tier, MIN(r.endpoint), COUNT(*),
       SUM(CASE WHEN s.error_code IS NULL THEN 1 ELSE 0 END),
       COALESCE(SUM(s.input_tokens), 0), COALESCE(SUM(s.cached_tokens), 0),
       COALESCE(SUM(s.cache_write_5m_tokens), 0), COALESCE(SUM(s.cache_write_1h_tokens), 0),
       COALESCE(SUM(s.output_tokens), 0),
       SUM(CASE WHEN s.usage_flag IS NOT NULL THEN 1 ELSE 0 END)
FROM outcome_staging s JOIN requests r ON r.id = s.request_id
WHERE s.kind IN ('succeeded', 'failed')
GROUP BY r.queue, r.provider, r.model, s.price_tier
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

-- name: staged_succeeded
-- What engine.sql's request_succeeded, _failed, _retry, _requeue and _cancelled do, each to
-- the staged rows of its kind, in one statement each.
UPDATE requests r SET state = 'succeeded', reason = NULL, updated_at = :now
FROM outcome_staging s
WHERE r.id = s.request_id AND s.kind = 'succeeded' AND r.state = 'submitted'

-- name: staged_failed
UPDATE requests r SET state = 'failed', attempts = r.attempts + 1,
    rejections = r.rejections + s.charge_rejection, reason = s.reason, updated_at = :now
FROM outcome_staging s
WHERE r.id = s.request_id AND s.kind = 'failed' AND r.state IN ('submitted', 'packed')

-- name: staged_retry
UPDATE requests r SET state = 'retry_wait', attempts = r.attempts + 1, not_before = s.not_before,
    reason = s.reason, updated_at = :now
FROM outcome_staging s
WHERE r.id = s.request_id AND s.kind = 'retry' AND r.state = 'submitted'

-- name: staged_requeue
UPDATE requests r SET state = 'queued', expiries = r.expiries + s.charge_expiry,
    rejections = r.rejections + s.charge_rejection, reason = s.reason, updated_at = :now
FROM outcome_staging s
WHERE r.id = s.request_id AND s.kind = 'requeue' AND r.state IN ('submitted', 'packed')

-- name: staged_cancelled
UPDATE requests r SET state = 'cancelled', reason = s.reason, updated_at = :now
FROM outcome_staging s
WHERE r.id = s.request_id AND s.kind = 'cancelled' AND r.state IN ('submitted', 'packed')

-- name: submit_requests
-- engine.sql's, as a join: the batch's attempts drive the update (no set of ids to build)
UPDATE requests r SET state = 'submitted', updated_at = :now
FROM attempts a WHERE a.batch_id = :id AND r.id = a.request_id AND r.state = 'packed'

-- name: batch_lines
-- engine.sql's, each line's request and body read by key (a nested loop; the subquery with
-- OFFSET 0 is not flattened into a join). As a join, the planner hashed a page's 2,000
-- attempts and read every row of `requests` to match them (or merged them with `requests`
-- read from its first id): once per page, quadratic in the store (100,000 requests: ~120 ms
-- a page at the end of the second intent against ~40 by key).
SELECT a.id, x.endpoint, x.body, a.line FROM attempts a
CROSS JOIN LATERAL (SELECT r.endpoint, b.body FROM requests r
                    JOIN request_bodies b ON b.hash = r.body_hash
                    WHERE r.id = a.request_id OFFSET 0) x
WHERE a.batch_id = :batch_id AND a.line > :after AND a.line <= :upto ORDER BY a.line
