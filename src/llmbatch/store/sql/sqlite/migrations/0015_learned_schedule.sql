-- 0015: the poll and sweep schedule lives in the store (issue 17), as the back-offs and the
-- counters already did: a cron `run` is a new process each time, and workers share batches.
-- poll_at: when the batch is next polled (0: at once); poll_every: the interval it is polled
-- at, doubling while nothing moves (0: poll_interval). `schedules`: when the store-wide
-- steps run next (`sweep`).

ALTER TABLE batches ADD COLUMN poll_at REAL NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN poll_every REAL NOT NULL DEFAULT 0;
CREATE TABLE schedules (
    name    TEXT PRIMARY KEY,
    next_at REAL NOT NULL
);
