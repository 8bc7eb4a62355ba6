-- What /metrics and the dashboard read: a few grouped scans, run together in one read
-- transaction (store/observe.py), so every worker reports the same figures for one store.

-- name: observe_requests
-- Requests per queue, provider, model and state, with the oldest one's enqueue time, the
-- retries and expiries they went through, and how many have a deadline that has passed or
-- falls before :horizon (one scan of requests: the snapshot's main cost).
SELECT queue, provider, model, state, COUNT(*) AS n, MIN(created_at) AS oldest,
       COALESCE(SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), 0) AS retries,
       COALESCE(SUM(expiries), 0) AS expiries,
       COALESCE(SUM(CASE WHEN deadline < :now THEN 1 ELSE 0 END), 0) AS missed,
       COALESCE(SUM(CASE WHEN deadline >= :now AND deadline < :horizon THEN 1 ELSE 0 END), 0)
           AS at_risk
FROM requests
WHERE import_id NOT IN (SELECT id FROM imports WHERE state <> 'committed')
-- state first: SQLite would otherwise walk the (queue, custom_id) index and fetch every row
-- by its id, slower than reading the table in order
GROUP BY state, queue, provider, model

-- name: observe_batches
-- Batches not yet read back, per provider, model and state: requests, run at the provider,
-- estimated tokens enqueued there (the quota's measure).
SELECT provider, COALESCE(model, '') AS model, state, COUNT(*) AS n,
       COALESCE(SUM(request_count), 0) AS requests,
       COALESCE(SUM(completed_count + failed_count), 0) AS done_at_provider,
       COALESCE(SUM(est_tokens), 0) AS est_tokens
FROM batches
WHERE state <> 'ingested'
GROUP BY provider, COALESCE(model, ''), state

-- name: observe_events
SELECT kind, COUNT(*) AS n, MAX(at) AS newest FROM events GROUP BY kind

-- name: observe_costs
-- Usage per UTC day, queue and pricing aggregate (the running totals, a few rows a day).
SELECT day, queue, provider, model, MIN(endpoint) AS endpoint, price_tier,
       COALESCE(SUM(requests), 0) AS requests, COALESCE(SUM(succeeded), 0) AS succeeded,
       COALESCE(SUM(input_tokens), 0) AS input_tokens,
       COALESCE(SUM(cached_tokens), 0) AS cached_tokens,
       COALESCE(SUM(cache_write_5m_tokens), 0) AS cache_write_5m_tokens,
       COALESCE(SUM(cache_write_1h_tokens), 0) AS cache_write_1h_tokens,
       COALESCE(SUM(output_tokens), 0) AS output_tokens, COALESCE(SUM(flagged), 0) AS flagged
FROM cost_totals
GROUP BY day, queue, provider, model, price_tier

-- name: observe_lease
SELECT holder, token, expires_at FROM leases WHERE name = 'engine'

-- name: observe_results_high
SELECT COALESCE(MAX(id), 0) AS id FROM results

-- name: observe_turnaround
-- Enqueue-to-result seconds of the results recorded in (after, upto], counted per bucket
-- upper bound (the bounds are in store/observe.py's TURNAROUND_BUCKETS), and their sum.
SELECT
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 60 THEN 1 ELSE 0 END), 0) AS within_60,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 300 THEN 1 ELSE 0 END), 0) AS within_300,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 900 THEN 1 ELSE 0 END), 0) AS within_900,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 1800 THEN 1 ELSE 0 END), 0) AS within_1800,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 3600 THEN 1 ELSE 0 END), 0) AS within_3600,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 7200 THEN 1 ELSE 0 END), 0) AS within_7200,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 14400 THEN 1 ELSE 0 END), 0) AS within_14400,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 28800 THEN 1 ELSE 0 END), 0) AS within_28800,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 43200 THEN 1 ELSE 0 END), 0) AS within_43200,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 86400 THEN 1 ELSE 0 END), 0) AS within_86400,
    COALESCE(SUM(CASE WHEN r.created_at - q.created_at <= 172800 THEN 1 ELSE 0 END), 0) AS within_172800,
    COUNT(*) AS count, COALESCE(SUM(r.created_at - q.created_at), 0) AS total_s
FROM results r JOIN requests q ON q.id = r.request_id
WHERE r.id > :after AND r.id <= :upto

-- name: observe_batch_events
-- One batch's life as the event log tells it (its intent's and its own), oldest first.
SELECT id, at, kind, detail FROM events
WHERE batch_id = :id OR batch_id = (SELECT intent_id FROM batches WHERE id = :id)
ORDER BY id LIMIT 200

-- name: observe_recent_failures
-- The newest failed results (an error code, or a status other than 2xx) among the last
-- :window results, newest first (a store with no failure is not scanned whole).
SELECT q.queue AS queue, q.custom_id AS custom_id, q.model AS model, r.status_code AS status_code,
       r.error_code AS error_code, r.error_message AS error_message, r.created_at AS at
FROM results r JOIN requests q ON q.id = r.request_id
WHERE (r.error_code IS NOT NULL OR r.status_code >= 300)
  AND r.id > (SELECT COALESCE(MAX(id), 0) FROM results) - :window
ORDER BY r.id DESC LIMIT :n
