-- 0012: request bodies in their own table, keyed by the canonical body hash (issue 23). A
-- body is written once, at enqueue; a state change rewrites the request's small row, never
-- its ~700 bytes of body. Requests with the same hash (same method, url and canonical body)
-- share one row. Result reuse will build on this table.

CREATE TABLE request_bodies (
    hash BYTEA PRIMARY KEY,
    body BYTEA NOT NULL
);

INSERT INTO request_bodies (hash, body) SELECT body_hash, body FROM requests WHERE true
ON CONFLICT (hash) DO NOTHING;

ALTER TABLE requests DROP COLUMN body;
