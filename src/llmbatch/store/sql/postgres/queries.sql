-- PostgreSQL's own statements: its catalog, its locks, its clock, the bulk load. Same
-- conventions as ../queries.sql; a name here replaces the shared query of that name.

-- name: fence
-- The lease by PostgreSQL's own clock, so workers on hosts whose clocks disagree agree on
-- when it runs out; FOR SHARE holds a take-over back until this write commits.
SELECT name, token, expires_at - EXTRACT(EPOCH FROM clock_timestamp()) AS seconds_left
FROM leases WHERE name IN (:name, 'engine')
FOR SHARE

-- name: fence_any
-- Whether the caller holds any live claim, by PostgreSQL's own clock (see fence).
SELECT 1 FROM leases WHERE token = :token AND expires_at - EXTRACT(EPOCH FROM clock_timestamp()) > 0
FOR SHARE

-- name: budgets_over
-- The store's budgets over a reservation's queues (and every queue together), locked.
SELECT queue, period, limit_micro FROM budgets WHERE queue = '*' OR queue IN (SELECT value FROM json_each(:queues))
ORDER BY queue, period
FOR UPDATE

-- name: lock_budgets
-- Serialise reservations and first-use budget writes (SQLite's BEGIN IMMEDIATE already does).
SELECT pg_advisory_xact_lock(:key)

-- name: lock_schema
-- Serialise migrations between processes (the write transaction does it on SQLite).
SELECT pg_advisory_xact_lock(7244323)

-- name: has_schema
SELECT to_regclass('meta') IS NOT NULL

-- name: where_am_i
-- The cluster's identifier and the database's name (a failover keeps both, a restore elsewhere
-- changes one).
SELECT system_identifier::text, current_database() FROM pg_control_system()

-- name: copy_staging
COPY import_staging (queue, custom_id, import_id, line, provider, endpoint, model, body,
                     body_hash, priority, deadline, text_chars, text_bytes, inputs, created_at,
                     updated_at)
FROM STDIN (FORMAT BINARY)

-- name: copy_requests
-- A chunk straight into requests (the usual case, no row already there): one COPY, no staging
-- table and no ON CONFLICT probe per row; a unique violation rolls it back to its savepoint.
COPY requests (queue, custom_id, import_id, line, provider, endpoint, model, body_hash, priority,
               deadline, text_chars, text_bytes, inputs, created_at, updated_at)
FROM STDIN (FORMAT BINARY)

-- name: copy_bodies
-- A chunk's bodies (one per hash) straight into request_bodies, as copy_requests.
COPY request_bodies (body, hash) FROM STDIN (FORMAT BINARY)

-- name: copy_staged_bodies
-- A chunk's bodies into the staging table, for load_staged_bodies after copy_bodies clashed.
COPY import_staging (body, body_hash) FROM STDIN (FORMAT BINARY)

-- name: load_staged
-- Move one staged chunk of an import into requests in one statement: the rows whose
-- (queue, custom_id) is new go in, in line order; the row count says how many.
INSERT INTO requests (queue, custom_id, import_id, line, provider, endpoint, model, body_hash,
                      priority, deadline, text_chars, text_bytes, inputs, created_at, updated_at)
SELECT queue, custom_id, import_id, line, provider, endpoint, model, body_hash, priority,
       deadline, text_chars, text_bytes, inputs, created_at, updated_at
FROM import_staging ORDER BY line
ON CONFLICT (queue, custom_id) DO NOTHING

-- name: load_staged_bodies
-- The bodies of a staged chunk whose every row went in (the usual case), unless a row with
-- the hash is there already. A scan of the staging table and nothing else: a join with the
-- rows that went in (a CTE over `RETURNING`) was planned as a merge join whose sort spilled
-- to disk, +0.3 s of server CPU per 100,000 requests.
INSERT INTO request_bodies (hash, body) SELECT body_hash, body FROM import_staging
ON CONFLICT (hash) DO NOTHING

-- name: load_staged_bodies_added
-- The bodies of a staged chunk some of whose rows did not go in (a clash): only those of the
-- rows that did (a clash's body would be no one's), found by their import and line.
INSERT INTO request_bodies (hash, body)
SELECT s.body_hash, s.body FROM import_staging s
WHERE EXISTS (SELECT 1 FROM requests r WHERE r.queue = s.queue AND r.custom_id = s.custom_id
              AND r.import_id = s.import_id AND r.line = s.line)
ON CONFLICT (hash) DO NOTHING

-- name: clear_staging
TRUNCATE import_staging

-- name: schema_columns
-- Columns of our tables, for the migration-equality test.
SELECT table_name, column_name, data_type, is_nullable, COALESCE(column_default, '')
FROM information_schema.columns WHERE table_schema = current_schema()
ORDER BY table_name, column_name

-- name: schema_indexes
SELECT tablename, indexname, indexdef FROM pg_indexes
WHERE schemaname = current_schema() ORDER BY tablename, indexname

-- name: schema_constraints
-- Constraints (keys, checks) of our tables, for the migration-equality test.
SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
WHERE c.connamespace = current_schema()::regnamespace AND c.conrelid <> 0
ORDER BY 1, 2

-- name: schema_storage
-- Storage parameters of our tables (a fillfactor), for the migration-equality test.
SELECT relname, 'storage', array_to_string(reloptions, ',') FROM pg_class
WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' AND reloptions IS NOT NULL
ORDER BY relname

-- name: clear_outcome_staging
TRUNCATE outcome_staging

-- name: lock_bodies
-- Wait for every import writing bodies to commit, and hold new ones back until this commits.
LOCK TABLE request_bodies IN SHARE ROW EXCLUSIVE MODE
