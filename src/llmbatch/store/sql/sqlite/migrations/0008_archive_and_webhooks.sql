-- 0008: archives and webhooks (issue 26). `archives` holds one row per ingested batch whose
-- files are to be copied to the user's archive (S3, R2, a folder): the provider's copies are
-- deleted only once it is done. `outbox` holds the webhook events to deliver, each until its
-- receiver answers 2xx; an event tied to a batch is sent only once that batch is ingested.

CREATE TABLE archives (
    batch_id   INTEGER NOT NULL PRIMARY KEY REFERENCES batches (id),
    state      TEXT    NOT NULL CHECK (state IN ('pending', 'done')),
    tries      INTEGER NOT NULL DEFAULT 0,
    not_before REAL    NOT NULL,
    last_error TEXT,
    from_store INTEGER NOT NULL DEFAULT 0,
    location   TEXT,
    created_at REAL    NOT NULL,
    done_at    REAL
);
CREATE INDEX archives_due ON archives (state, not_before);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    kind         TEXT    NOT NULL,
    batch_id     INTEGER,
    payload      BLOB    NOT NULL,
    tries        INTEGER NOT NULL DEFAULT 0,
    not_before   REAL    NOT NULL,
    last_error   TEXT,
    created_at   REAL    NOT NULL,
    delivered_at REAL
);
CREATE INDEX outbox_due ON outbox (delivered_at, not_before);
