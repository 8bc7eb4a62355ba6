-- 0009: request counts kept by the store (issue 24). /metrics and the dashboard read the
-- requests per queue, provider, model and state, the age of the oldest unfinished one and
-- the deadlines at risk from these small tables and a partial index, instead of grouping
-- every request (38 s on a million in SQLite, under load). Triggers keep them in the
-- transaction of every state change; an import's rows are counted once, when it commits.

-- Requests per queue, provider, model and state, kept by the store in the transaction that
-- changes them (triggers below), so /metrics, the dashboard and `status` read a few rows
-- instead of grouping every request. Rows of an import count once it commits (they are not
-- visible before), as one grouped insert of its rows: no per-row cost on enqueue.
-- retries: attempts after the first; expiries: times a batch expired with a request unrun.
CREATE TABLE request_counts (
    queue    TEXT   NOT NULL,
    provider TEXT   NOT NULL,
    model    TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    n        BIGINT NOT NULL,
    retries  BIGINT NOT NULL,
    expiries BIGINT NOT NULL,
    PRIMARY KEY (queue, provider, model, state)
);

-- Unfinished requests per queue and minute of enqueue (created_at / 60): the oldest one's
-- age to the minute, without an index over every request. Empty minutes are deleted.
CREATE TABLE request_ages (
    queue  TEXT   NOT NULL,
    minute BIGINT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (queue, minute)
);

-- Unfinished requests with a deadline, by deadline (missed and at-risk counts); rows without
-- a deadline are not in it, so enqueue pays for it only where a deadline is set.
CREATE INDEX requests_deadline ON requests (deadline)
    WHERE deadline IS NOT NULL AND state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held');

CREATE FUNCTION request_counts_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO request_counts (queue, provider, model, state, n, retries, expiries)
    SELECT queue, provider, model, state, COUNT(*),
           SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), SUM(expiries)
    FROM requests WHERE id > NEW.low_water AND import_id = NEW.id
    GROUP BY queue, provider, model, state
    ORDER BY queue, provider, model, state
    ON CONFLICT (queue, provider, model, state) DO UPDATE
    SET n = request_counts.n + excluded.n, retries = request_counts.retries + excluded.retries,
        expiries = request_counts.expiries + excluded.expiries;
    INSERT INTO request_ages (queue, minute, n)
    SELECT queue, FLOOR(created_at / 60)::BIGINT, COUNT(*) FROM requests
    WHERE id > NEW.low_water AND import_id = NEW.id
      AND state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held')
    GROUP BY queue, FLOOR(created_at / 60)::BIGINT
    ORDER BY 1, 2
    ON CONFLICT (queue, minute) DO UPDATE SET n = request_ages.n + excluded.n;
    RETURN NULL;
END $$;

-- A request's move from one state to another. The import's row is read FOR SHARE: a commit
-- of that import running at the same time waits for this transaction (or this for it), so
-- a row changed while its import commits is counted once.
CREATE FUNCTION request_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_ requests;
    sign_ BIGINT;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        row_ := NEW;
    ELSE
        row_ := OLD;
    END IF;
    PERFORM 1 FROM imports WHERE id = row_.import_id AND state = 'committed' FOR SHARE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE request_counts
    SET n = n - 1, retries = retries - GREATEST(OLD.attempts - 1, 0),
        expiries = expiries - OLD.expiries
    WHERE queue = OLD.queue AND provider = OLD.provider AND model = OLD.model
      AND state = OLD.state;
    sign_ := CASE WHEN OLD.state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held')
                  THEN -1 ELSE 0 END;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO request_counts (queue, provider, model, state, n, retries, expiries)
        VALUES (NEW.queue, NEW.provider, NEW.model, NEW.state, 1, GREATEST(NEW.attempts - 1, 0),
                NEW.expiries)
        ON CONFLICT (queue, provider, model, state) DO UPDATE
        SET n = request_counts.n + 1, retries = request_counts.retries + excluded.retries,
            expiries = request_counts.expiries + excluded.expiries;
        IF NEW.state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held') THEN
            sign_ := sign_ + 1;
        END IF;
    END IF;
    IF sign_ <> 0 THEN
        INSERT INTO request_ages (queue, minute, n)
        VALUES (row_.queue, FLOOR(row_.created_at / 60)::BIGINT, sign_)
        ON CONFLICT (queue, minute) DO UPDATE SET n = request_ages.n + excluded.n;
        DELETE FROM request_ages
        WHERE queue = row_.queue AND minute = FLOOR(row_.created_at / 60)::BIGINT AND n = 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER request_counts_commit AFTER UPDATE OF state ON imports
FOR EACH ROW WHEN (NEW.state = 'committed' AND OLD.state <> 'committed')
EXECUTE FUNCTION request_counts_commit();

CREATE TRIGGER request_counts_update AFTER UPDATE OF state, attempts, expiries ON requests
FOR EACH ROW EXECUTE FUNCTION request_counts_change();

CREATE TRIGGER request_counts_delete AFTER DELETE ON requests
FOR EACH ROW EXECUTE FUNCTION request_counts_change();

-- The counts of the requests already in the store (those of committed imports).
INSERT INTO request_counts (queue, provider, model, state, n, retries, expiries)
SELECT queue, provider, model, state, COUNT(*),
       SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), SUM(expiries)
FROM requests
WHERE import_id IN (SELECT id FROM imports WHERE state = 'committed')
GROUP BY queue, provider, model, state;

INSERT INTO request_ages (queue, minute, n)
SELECT queue, FLOOR(created_at / 60)::BIGINT, COUNT(*) FROM requests
WHERE import_id IN (SELECT id FROM imports WHERE state = 'committed')
  AND state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held')
GROUP BY queue, FLOOR(created_at / 60)::BIGINT;
