-- 0017: the foreign keys of attempts and results are no longer checked row by row (issue 23,
-- PostgreSQL at 1,000,000 requests). Each check locked its parent row: an intent's attempts
-- insert checked its request and its batch once per line, an ingest chunk's results insert
-- its attempt and its request, ~2 s of server CPU per 100,000 requests (an attempts insert
-- 1.35 -> 0.39 s, a results insert 2.0 -> 0.9 s). What they guarded is held by the code that
-- writes the rows, as on SQLite, which never enforced them (foreign_keys is off): an attempt
-- is inserted only in the transaction that packed its request (the intent rolls back unless
-- every request was still queued) and made its batch, or from its request's row when the
-- request ends unsent; a result only for an attempt read as waiting (or just inserted) in
-- the transaction that records it, with that attempt's request; purge deletes a request's
-- results and attempts before it, and only once the request has ended.
--
-- attempts leave half of each page free: an attempt is updated twice (submitted, then its
-- outcome), and with room on its page the new version goes there without a new entry in
-- any of its three indexes (a HOT update: no indexed column changes). Existing pages keep
-- what they hold; pages filled from now on leave the room.

ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_request_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_batch_id_fkey;
ALTER TABLE results DROP CONSTRAINT IF EXISTS results_attempt_id_fkey;
ALTER TABLE results DROP CONSTRAINT IF EXISTS results_request_id_fkey;
ALTER TABLE attempts SET (fillfactor = 50);
