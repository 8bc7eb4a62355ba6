-- Queries of the ledger: what each provider batch's result lines said it used (the tally),
-- what the provider says, and what a receipt shows. Same conventions as queries.sql.

-- name: delete_tally
DELETE FROM batch_tally WHERE batch_id = :id

-- name: insert_tally
INSERT INTO batch_tally (batch_id, model, price_tier, results, flagged, input_tokens,
                         cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
                         output_tokens, reasoning_tokens)
VALUES (:id, :model, :tier, :results, :flagged, :input, :cached, :write_5m, :write_1h, :output,
        :reasoning)

-- name: tally_rows
SELECT model, price_tier AS tier, results, flagged, input_tokens AS input, cached_tokens AS cached,
       cache_write_5m_tokens AS write_5m, cache_write_1h_tokens AS write_1h, output_tokens AS output,
       reasoning_tokens AS reasoning
FROM batch_tally WHERE batch_id = :id ORDER BY model, price_tier

-- name: upsert_provider_usage
INSERT INTO provider_usage (batch_id, input_tokens, cached_tokens, output_tokens,
                            reasoning_tokens, seen_at, model)
VALUES (:id, :input, :cached, :output, :reasoning, :now, :model)
ON CONFLICT (batch_id) DO UPDATE
SET input_tokens = excluded.input_tokens, cached_tokens = excluded.cached_tokens,
    output_tokens = excluded.output_tokens, reasoning_tokens = excluded.reasoning_tokens,
    seen_at = excluded.seen_at, model = COALESCE(excluded.model, provider_usage.model)

-- name: usage_checks
-- Ingested batches whose provider said what they used, beside what their lines said.
SELECT b.id AS batch_id, b.provider_batch_id AS provider_batch_id, b.provider AS provider,
       p.input_tokens AS says_input, p.cached_tokens AS says_cached,
       p.output_tokens AS says_output, p.reasoning_tokens AS says_reasoning,
       t.input_tokens AS counted_input, t.cached_tokens AS counted_cached,
       t.output_tokens AS counted_output, t.reasoning_tokens AS counted_reasoning,
       t.results AS results, t.flagged AS flagged, p.model AS model
FROM provider_usage p
JOIN batches b ON b.id = p.batch_id
JOIN (SELECT batch_id, SUM(input_tokens) AS input_tokens, SUM(cached_tokens) AS cached_tokens,
             SUM(output_tokens) AS output_tokens, SUM(reasoning_tokens) AS reasoning_tokens,
             SUM(results) AS results, SUM(flagged) AS flagged
      FROM batch_tally GROUP BY batch_id) t ON t.batch_id = p.batch_id
WHERE (:ingested = 0 OR b.state = 'ingested') AND (CAST(:id AS BIGINT) IS NULL OR b.id = :id)
  AND (:all_rows = 1 OR p.input_tokens <> t.input_tokens OR p.output_tokens <> t.output_tokens
       OR p.cached_tokens <> t.cached_tokens OR p.reasoning_tokens <> t.reasoning_tokens)
ORDER BY b.id DESC
LIMIT :lim

-- name: find_batch
SELECT id, provider, endpoint, model, state, provider_batch_id, intent_id, request_count,
       created_at, submitted_at, ingested_at
FROM batches WHERE provider_batch_id = :ref OR CAST(id AS TEXT) = :ref
ORDER BY id LIMIT 1

-- name: batches_named
-- The batches a reference names: our number, or a provider batch id (at one provider or more).
SELECT id, provider FROM batches WHERE provider_batch_id = :ref OR CAST(id AS TEXT) = :ref
ORDER BY id

-- name: duplicates_of
SELECT id, provider_batch_id FROM batches WHERE intent_id = :id ORDER BY id

-- name: batch_spend
SELECT batch_id, queue, day, reserved, spent, worst, kind, unpriced, prices, settled_at
FROM spend WHERE batch_id = :id ORDER BY queue

-- name: unplanned_spend
-- Spend no budget planned (a duplicate provider batch) or could not price, over UTC days.
SELECT s.batch_id AS batch_id, s.queue AS queue, s.day AS day, s.reserved AS reserved,
       s.spent AS spent, s.worst AS worst, s.kind AS kind, s.unpriced AS unpriced,
       s.prices AS prices, s.settled_at AS settled_at
FROM spend s
WHERE (s.kind <> 'planned' OR s.unpriced > 0) AND s.day >= :first AND s.day < :end
  AND (CAST(:queue AS TEXT) IS NULL OR s.queue = :queue)
ORDER BY s.day, s.batch_id, s.queue

-- name: receipt_batch_groups
-- Usage of the results of one batch (the intent whose attempts they answer) per pricing
-- aggregate and queue.
SELECT a.batch_id AS batch_id, r.provider AS provider, r.model AS model,
       MIN(r.endpoint) AS endpoint, x.price_tier AS price_tier, x.day AS day, r.queue AS queue,
       COUNT(*) AS requests, SUM(CASE WHEN x.error_code IS NULL THEN 1 ELSE 0 END) AS succeeded,
       COALESCE(SUM(x.input_tokens), 0) AS input_tokens,
       COALESCE(SUM(x.cached_tokens), 0) AS cached_tokens,
       COALESCE(SUM(x.cache_write_5m_tokens), 0) AS cache_write_5m_tokens,
       COALESCE(SUM(x.cache_write_1h_tokens), 0) AS cache_write_1h_tokens,
       COALESCE(SUM(x.output_tokens), 0) AS output_tokens,
       SUM(CASE WHEN x.usage_flag IS NOT NULL THEN 1 ELSE 0 END) AS flagged
FROM attempts a
JOIN results x ON x.attempt_id = a.id
JOIN requests r ON r.id = x.request_id
WHERE a.batch_id = :batch
GROUP BY a.batch_id, x.day, x.price_tier, r.model, r.queue, r.provider
ORDER BY r.model, x.price_tier

-- name: receipt_day_groups
-- Usage of results recorded over UTC days [first, end) per batch, pricing aggregate and
-- queue (of one queue, or all).
SELECT a.batch_id AS batch_id, r.provider AS provider, r.model AS model,
       MIN(r.endpoint) AS endpoint, x.price_tier AS price_tier, x.day AS day, r.queue AS queue,
       COUNT(*) AS requests, SUM(CASE WHEN x.error_code IS NULL THEN 1 ELSE 0 END) AS succeeded,
       COALESCE(SUM(x.input_tokens), 0) AS input_tokens,
       COALESCE(SUM(x.cached_tokens), 0) AS cached_tokens,
       COALESCE(SUM(x.cache_write_5m_tokens), 0) AS cache_write_5m_tokens,
       COALESCE(SUM(x.cache_write_1h_tokens), 0) AS cache_write_1h_tokens,
       COALESCE(SUM(x.output_tokens), 0) AS output_tokens,
       SUM(CASE WHEN x.usage_flag IS NOT NULL THEN 1 ELSE 0 END) AS flagged
FROM batches b
JOIN attempts a ON a.batch_id = b.id
JOIN results x ON x.attempt_id = a.id
JOIN requests r ON r.id = x.request_id
-- only batches that can hold results of those days: made before they end, and not
-- ingested before they begin (results are recorded as a batch is ingested)
WHERE b.created_at < :end * 86400.0
  AND (b.ingested_at IS NULL OR b.ingested_at >= :first * 86400.0)
  AND x.day >= :first AND x.day < :end
  AND (CAST(:queue AS TEXT) IS NULL OR r.queue = :queue)
GROUP BY a.batch_id, x.day, x.price_tier, r.model, r.queue, r.provider
ORDER BY a.batch_id, r.model, x.price_tier
