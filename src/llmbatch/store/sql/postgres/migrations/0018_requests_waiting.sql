-- 0018: a request's state changes after it is packed become HOT updates on PostgreSQL (issue
-- 23, PostgreSQL at 1,000,000 requests). Each request changes state three times (packed,
-- submitted, its outcome), and none of them could be HOT: `state` was in the predicates of
-- the three partial indexes that find the requests waiting (queued, held, retry_wait), so
-- every change wrote a new entry into each of the table's indexes, ~0.8 s of server CPU per
-- 100,000 requests a change.
--
-- `waiting` is `state` while the request waits to be packed (queued, held, retry_wait) and
-- NULL otherwise, a column PostgreSQL computes: the three indexes read it instead of `state`,
-- so a change between two other states (packed -> submitted -> succeeded) leaves every
-- indexed column as it was. The dialect's queries say `waiting = 'queued'` where the shared
-- SQL says `state = 'queued'` (store/sqlfiles.py). Half of each page is left free, so the new
-- version of a row fits on its page (as attempts, 0017). Adding the column rewrites the table,
-- its rows already at the new fillfactor.

ALTER TABLE requests SET (fillfactor = 50);
ALTER TABLE requests ADD COLUMN waiting TEXT
    GENERATED ALWAYS AS (CASE WHEN state IN ('queued', 'held', 'retry_wait') THEN state END) STORED;
DROP INDEX requests_ready;
DROP INDEX requests_waiting;
DROP INDEX requests_held;
CREATE INDEX requests_ready ON requests (provider, endpoint, model, priority DESC, id)
    WHERE waiting = 'queued';
CREATE INDEX requests_waiting ON requests (not_before) WHERE waiting = 'retry_wait';
CREATE INDEX requests_held ON requests (queue) WHERE waiting = 'held';
