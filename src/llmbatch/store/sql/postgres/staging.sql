-- A per-session staging table that COPY fills before one set-based insert into requests, for
-- an import whose rows or bodies clashed (a clean chunk is COPYed straight into requests).
CREATE TEMP TABLE IF NOT EXISTS import_staging (
    queue      TEXT,
    custom_id  TEXT,
    import_id  BIGINT,
    line       BIGINT,
    provider   TEXT,
    endpoint   TEXT,
    model      TEXT,
    body       BYTEA,
    body_hash  BYTEA,
    priority   BIGINT,
    deadline   DOUBLE PRECISION,
    text_chars BIGINT,
    text_bytes BIGINT,
    inputs     BIGINT,
    created_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION
) ON COMMIT DELETE ROWS
