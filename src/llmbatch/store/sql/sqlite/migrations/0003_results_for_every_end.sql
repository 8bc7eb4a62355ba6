-- Every finished request gets a result row, whatever ended it, so the export lists it
-- (one line per request, cancelled and failed included). Stores made before this kept none
-- for a request cancelled while it waited or failed as too large for any batch, nor for
-- a request cancelled in its batch. No schema change: rows only.

-- cancelled in a batch: the attempt carries the reason
INSERT INTO results (attempt_id, request_id, error_code, error_message, day, created_at)
SELECT a.id, a.request_id, COALESCE(a.error_code, 'cancelled'), a.error_message,
       CAST(COALESCE(a.finished_at, a.created_at) / 86400 AS INTEGER),
       COALESCE(a.finished_at, a.created_at)
FROM attempts a JOIN requests r ON r.id = a.request_id
WHERE r.state = 'cancelled' AND a.outcome = 'cancelled'
  AND a.id = (SELECT MAX(id) FROM attempts WHERE request_id = a.request_id)
  AND NOT EXISTS (SELECT 1 FROM results x WHERE x.request_id = r.id);

-- ended without a batch: an attempt records how (outcome 'unsent': it cost nothing), then
-- its result
INSERT INTO attempts (request_id, batch_id, line, state, outcome, error_code, error_message,
                      created_at, finished_at)
SELECT r.id, NULL, NULL, r.state, 'unsent',
       CASE WHEN r.state = 'cancelled' THEN 'cancelled' ELSE 'too_large' END,
       r.reason, r.updated_at, r.updated_at
FROM requests r
WHERE r.state IN ('cancelled', 'failed')
  AND NOT EXISTS (SELECT 1 FROM results x WHERE x.request_id = r.id);

INSERT INTO results (attempt_id, request_id, error_code, error_message, day, created_at)
SELECT a.id, a.request_id, a.error_code, a.error_message,
       CAST(a.finished_at / 86400 AS INTEGER), a.finished_at
FROM attempts a
WHERE a.batch_id IS NULL AND a.state IN ('cancelled', 'failed')
  AND NOT EXISTS (SELECT 1 FROM results x WHERE x.attempt_id = a.id);
