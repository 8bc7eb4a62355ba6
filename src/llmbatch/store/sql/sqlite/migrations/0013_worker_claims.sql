-- 0013: workers that share the work (issue 27). Every worker has a row and a token of its own,
-- drawn once: the token every lease and claim it holds carries, so a write's fence tells the
-- workers apart on any row. `leases` holds the store-wide engine lease and the claims
-- (`batch:<id>`, `group:<key>`), each with since when its holder has it. A batch packed for
-- one queue says which (`llmbatch worker --queue`); NULL: packed across queues, as before.
-- Tokens start past every token already in `leases`, so none held before the upgrade is
-- ever drawn again.

CREATE TABLE workers (
    token      INTEGER PRIMARY KEY AUTOINCREMENT,
    holder     TEXT    NOT NULL UNIQUE,
    queues     TEXT,
    started_at REAL    NOT NULL,
    seen_at    REAL    NOT NULL,
    packed     INTEGER NOT NULL DEFAULT 0,
    submitted  INTEGER NOT NULL DEFAULT 0,
    polled     INTEGER NOT NULL DEFAULT 0,
    ingested   INTEGER NOT NULL DEFAULT 0,
    outcomes   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO sqlite_sequence (name, seq) SELECT 'workers', COALESCE(MAX(token), 0) FROM leases;
ALTER TABLE leases ADD COLUMN since REAL;
ALTER TABLE batches ADD COLUMN queue TEXT;
