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
    queue    TEXT    NOT NULL,
    provider TEXT    NOT NULL,
    model    TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    retries  INTEGER NOT NULL,
    expiries INTEGER NOT NULL,
    PRIMARY KEY (queue, provider, model, state)
);

-- Unfinished requests per queue and minute of enqueue (created_at / 60): the oldest one's
-- age to the minute, without an index over every request. Empty minutes are deleted.
CREATE TABLE request_ages (
    queue  TEXT    NOT NULL,
    minute INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (queue, minute)
);

-- Unfinished requests with a deadline, by deadline (missed and at-risk counts); rows without
-- a deadline are not in it, so enqueue pays for it only where a deadline is set.
CREATE INDEX requests_deadline ON requests (deadline)
    WHERE deadline IS NOT NULL AND state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held');

CREATE TRIGGER request_counts_commit AFTER UPDATE OF state ON imports
WHEN NEW.state = 'committed' AND OLD.state <> 'committed'
BEGIN
    INSERT INTO request_counts (queue, provider, model, state, n, retries, expiries)
    SELECT queue, provider, model, state, COUNT(*),
           SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), SUM(expiries)
    FROM requests WHERE id > NEW.low_water AND import_id = NEW.id
    GROUP BY queue, provider, model, state
    ON CONFLICT (queue, provider, model, state) DO UPDATE
    SET n = n + excluded.n, retries = retries + excluded.retries,
        expiries = expiries + excluded.expiries;
    INSERT INTO request_ages (queue, minute, n)
    SELECT queue, CAST(created_at / 60 AS INTEGER), COUNT(*) FROM requests
    WHERE id > NEW.low_water AND import_id = NEW.id
      AND state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held')
    GROUP BY queue, CAST(created_at / 60 AS INTEGER)
    ON CONFLICT (queue, minute) DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER request_counts_update AFTER UPDATE OF state, attempts, expiries ON requests
WHEN (SELECT state FROM imports WHERE id = NEW.import_id) = 'committed'
BEGIN
    UPDATE request_counts
    SET n = n - 1, retries = retries - MAX(OLD.attempts - 1, 0), expiries = expiries - OLD.expiries
    WHERE queue = OLD.queue AND provider = OLD.provider AND model = OLD.model
      AND state = OLD.state;
    INSERT INTO request_counts (queue, provider, model, state, n, retries, expiries)
    VALUES (NEW.queue, NEW.provider, NEW.model, NEW.state, 1, MAX(NEW.attempts - 1, 0),
            NEW.expiries)
    ON CONFLICT (queue, provider, model, state) DO UPDATE
    SET n = n + 1, retries = retries + excluded.retries, expiries = expiries + excluded.expiries;
END;

CREATE TRIGGER request_ages_update AFTER UPDATE OF state ON requests
WHEN (OLD.state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held'))
     <> (NEW.state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held'))
 AND (SELECT state FROM imports WHERE id = NEW.import_id) = 'committed'
BEGIN
    INSERT INTO request_ages (queue, minute, n)
    VALUES (NEW.queue, CAST(NEW.created_at / 60 AS INTEGER),
            IIF(NEW.state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held'), 1, -1))
    ON CONFLICT (queue, minute) DO UPDATE SET n = n + excluded.n;
    DELETE FROM request_ages
    WHERE queue = NEW.queue AND minute = CAST(NEW.created_at / 60 AS INTEGER) AND n = 0;
END;

CREATE TRIGGER request_counts_delete AFTER DELETE ON requests
WHEN (SELECT state FROM imports WHERE id = OLD.import_id) = 'committed'
BEGIN
    UPDATE request_counts
    SET n = n - 1, retries = retries - MAX(OLD.attempts - 1, 0), expiries = expiries - OLD.expiries
    WHERE queue = OLD.queue AND provider = OLD.provider AND model = OLD.model
      AND state = OLD.state;
    UPDATE request_ages SET n = n - 1
    WHERE OLD.state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held')
      AND queue = OLD.queue AND minute = CAST(OLD.created_at / 60 AS INTEGER);
    DELETE FROM request_ages
    WHERE queue = OLD.queue AND minute = CAST(OLD.created_at / 60 AS INTEGER) AND n = 0;
END;

-- The counts of the requests already in the store (those of committed imports).
INSERT INTO request_counts (queue, provider, model, state, n, retries, expiries)
SELECT queue, provider, model, state, COUNT(*),
       SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), SUM(expiries)
FROM requests
WHERE import_id IN (SELECT id FROM imports WHERE state = 'committed')
GROUP BY queue, provider, model, state;

INSERT INTO request_ages (queue, minute, n)
SELECT queue, CAST(created_at / 60 AS INTEGER), COUNT(*) FROM requests
WHERE import_id IN (SELECT id FROM imports WHERE state = 'committed')
  AND state IN ('queued', 'packed', 'submitted', 'retry_wait', 'held')
GROUP BY queue, CAST(created_at / 60 AS INTEGER);
