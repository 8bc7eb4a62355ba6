-- Move one staged chunk of an import into requests in one statement: the rows whose
-- (queue, custom_id) is new go in, and the body of each row that went in goes to
-- request_bodies unless a row with its hash is there already. Returns how many went in.
WITH added AS (
    INSERT INTO requests (queue, custom_id, import_id, line, provider, endpoint, model, body_hash,
                          priority, deadline, text_chars, text_bytes, inputs, created_at,
                          updated_at)
    SELECT queue, custom_id, import_id, line, provider, endpoint, model, body_hash, priority,
           deadline, text_chars, text_bytes, inputs, created_at, updated_at
    FROM import_staging ORDER BY line
    ON CONFLICT (queue, custom_id) DO NOTHING
    RETURNING line
), bodies AS (
    INSERT INTO request_bodies (hash, body)
    SELECT s.body_hash, s.body FROM import_staging s JOIN added a ON a.line = s.line
    ON CONFLICT (hash) DO NOTHING
)
SELECT COUNT(*) FROM added
