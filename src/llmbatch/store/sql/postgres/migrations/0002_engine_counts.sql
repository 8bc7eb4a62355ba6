-- 0002: what the engine counts lives in the store (a cron `run` is a new process each
-- time): per-request batch-level rejections, per-batch back-off, download tries and 404
-- confirmations, and per-group back-off (issue 14).

ALTER TABLE requests ADD COLUMN rejections BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN not_before DOUBLE PRECISION;
ALTER TABLE batches ADD COLUMN setbacks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN download_tries BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN gone_checks BIGINT NOT NULL DEFAULT 0;

CREATE TABLE group_backoffs (
    provider   TEXT    NOT NULL,
    endpoint   TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    strikes    BIGINT NOT NULL,
    cap        BIGINT,
    quota      BIGINT,
    not_before DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, endpoint, model)
);
