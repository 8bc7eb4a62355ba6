-- 0002: what the engine counts lives in the store (a cron `run` is a new process each
-- time): per-request batch-level rejections, per-batch back-off, download tries and 404
-- confirmations, and per-group back-off (issue 14).

ALTER TABLE requests ADD COLUMN rejections INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN not_before REAL;
ALTER TABLE batches ADD COLUMN setbacks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN download_tries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN gone_checks INTEGER NOT NULL DEFAULT 0;

CREATE TABLE group_backoffs (
    provider   TEXT    NOT NULL,
    endpoint   TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    strikes    INTEGER NOT NULL,
    cap        INTEGER,
    quota      INTEGER,
    not_before REAL NOT NULL,
    PRIMARY KEY (provider, endpoint, model)
);
