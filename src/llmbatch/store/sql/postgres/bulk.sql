-- PostgreSQL's own set-based statements for packing and ingest (sqlfiles.bulk_queries), in
-- psycopg's parameter style. An intent's request ids travel as one BIGINT[] parameter; an
-- ingest chunk's outcomes are COPYed into a per-session staging table and applied with one
-- statement per table.

-- name: pack_requests
UPDATE requests SET state = 'packed', updated_at = %(now)s, reason = NULL
WHERE id = ANY(CAST(%(ids)s AS BIGINT[])) AND state = 'queued'

-- name: insert_attempts
INSERT INTO attempts (request_id, batch_id, line, state, created_at)
SELECT t.request_id, %(batch_id)s, t.line, 'packed', %(now)s
FROM unnest(CAST(%(ids)s AS BIGINT[])) WITH ORDINALITY AS t (request_id, line)
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
UPDATE attempts a SET state = s.kind, outcome = s.kind, error_code = s.error_code,
    error_message = s.error_message, finished_at = %(now)s
FROM outcome_staging s WHERE a.id = s.attempt_id

-- name: insert_staged_results
-- a cancelled request gets a result too (the export lists it), but costs nothing
INSERT INTO results (attempt_id, request_id, status_code, provider_request_id, body, error_code,
                     error_message, input_tokens, output_tokens, cached_tokens,
                     cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, usage_flag,
                     price_tier, day, created_at)
SELECT attempt_id, request_id, status_code, provider_request_id, body, error_code, error_message,
       input_tokens, output_tokens, cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
       reasoning_tokens, usage_flag, price_tier, %(day)s, %(now)s
FROM outcome_staging WHERE kind IN ('succeeded', 'failed', 'cancelled') ORDER BY attempt_id
ON CONFLICT (attempt_id) DO NOTHING

-- name: move_staged_requests
-- What engine.sql's request_succeeded, _failed, _retry, _requeue and _cancelled do, each to
-- its own kind's rows, in one statement: only a failed, requeued or cancelled outcome moves a
-- request that is still packed (never sent); every other needs it submitted.
UPDATE requests r SET
    state = CASE s.kind WHEN 'retry' THEN 'retry_wait' WHEN 'requeue' THEN 'queued'
                        ELSE s.kind END,
    attempts = r.attempts + CASE WHEN s.kind IN ('failed', 'retry') THEN 1 ELSE 0 END,
    expiries = r.expiries + CASE WHEN s.kind = 'requeue' THEN s.charge_expiry ELSE 0 END,
    rejections = r.rejections + CASE WHEN s.kind IN ('failed', 'requeue') THEN s.charge_rejection
                                     ELSE 0 END,
    not_before = CASE WHEN s.kind = 'retry' THEN s.not_before ELSE r.not_before END,
    reason = s.reason,
    updated_at = %(now)s
FROM outcome_staging s
WHERE r.id = s.request_id
  AND (r.state = 'submitted' OR (r.state = 'packed' AND s.kind IN ('failed', 'requeue', 'cancelled')))
