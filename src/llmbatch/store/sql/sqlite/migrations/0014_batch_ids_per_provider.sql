-- 0014: a provider's batch id is unique at that provider only. Two OpenAI-compatible services
-- run by their owners may both number their batches batch_1, batch_2, ...: the column's own
-- UNIQUE refused the second one's id and its requests stayed packed. The uniqueness is now
-- (provider, provider_batch_id), an index beside the table. SQLite cannot drop a column's
-- UNIQUE, so the table is made again, as the fresh schema makes it: copied out, dropped,
-- created, copied back (every column, in order), its index and AUTOINCREMENT counter restored.
-- Nothing references batches with a foreign key that SQLite enforces here (foreign_keys off).

CREATE TABLE batches_0014 AS SELECT * FROM batches;
CREATE TABLE batches_0014_seq AS SELECT seq FROM sqlite_sequence WHERE name = 'batches';
DROP TABLE batches;

CREATE TABLE batches (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    provider          TEXT    NOT NULL,
    endpoint          TEXT    NOT NULL,
    model             TEXT,
    state             TEXT    NOT NULL,
    provider_batch_id TEXT,
    intent_id         INTEGER, -- set on a batch adopted for another row's intent
    provider_status   TEXT,
    input_file_id     TEXT,
    output_file_id    TEXT,
    error_file_id     TEXT,
    content_hash      BLOB,
    input_bytes       INTEGER,
    est_tokens        INTEGER NOT NULL DEFAULT 0,
    request_count     INTEGER NOT NULL DEFAULT 0,
    completed_count   INTEGER NOT NULL DEFAULT 0,
    failed_count      INTEGER NOT NULL DEFAULT 0,
    errors            TEXT,
    created_at        REAL NOT NULL,
    upload_started_at REAL,
    create_started_at REAL,
    submitted_at      REAL,
    finished_at       REAL,
    ingested_at       REAL,
    cancel_requested_at REAL,
    cancel_sent_at    REAL,
    updated_at        REAL NOT NULL,
    -- What the engine counts per batch lives here, not in a worker's memory (a cron `run` is
    -- a new process each time): no work before not_before, transient failures in a row, result
    -- downloads that did not account for every request, retrieves that answered 404.
    not_before        REAL,
    setbacks          INTEGER NOT NULL DEFAULT 0,
    download_tries    INTEGER NOT NULL DEFAULT 0,
    gone_checks       INTEGER NOT NULL DEFAULT 0,
    -- Proof of ownership (see submission.py): the random nonce this intent's batch carries
    -- at the provider, and, while it waits for same-size batches to say whose they are,
    -- until when it may wait before it creates again.
    nonce             TEXT,
    proof_wait_until  REAL,
    -- the queue of a batch packed for one queue (`llmbatch worker --queue`); NULL: several
    queue             TEXT
);

INSERT INTO batches SELECT * FROM batches_0014;
DELETE FROM sqlite_sequence WHERE name = 'batches';
INSERT INTO sqlite_sequence (name, seq) SELECT 'batches', seq FROM batches_0014_seq;
DROP TABLE batches_0014;
DROP TABLE batches_0014_seq;
CREATE INDEX batches_open ON batches (state) WHERE state <> 'ingested';
CREATE UNIQUE INDEX batches_provider_id ON batches (provider_batch_id, provider);
