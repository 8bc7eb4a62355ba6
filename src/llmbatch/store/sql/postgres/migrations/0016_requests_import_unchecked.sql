-- 0016: requests.import_id is no longer a foreign key PostgreSQL checks row by row (issue 15,
-- 17: the enqueue no slower than before). The check ran once per inserted request, ~0.35 s
-- of server CPU per 100,000 requests, the cost migration 0012's body table had added. What it
-- guarded is held otherwise: a chunk goes in only in the transaction whose heartbeat updates
-- its import's row while the import is loading (that row stays locked until the chunk
-- commits), and an import is deleted only once no request names it. SQLite never enforced
-- it (foreign_keys is off), so both stores now keep the same rule the same way.

ALTER TABLE requests DROP CONSTRAINT IF EXISTS requests_import_id_fkey;
