-- The fresh llmbatch schema for SQLite. Migrations in migrations/ must produce exactly this.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per enqueue: its rows become visible to workers only once it is committed.
CREATE TABLE imports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('loading', 'committed', 'failed')),
    owner        TEXT    NOT NULL,
    low_water    INTEGER NOT NULL,
    lines        INTEGER NOT NULL DEFAULT 0,
    added        INTEGER NOT NULL DEFAULT 0,
    unchanged    INTEGER NOT NULL DEFAULT 0,
    rejected     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    started_at   REAL    NOT NULL,
    heartbeat_at REAL    NOT NULL,
    finished_at  REAL
);

CREATE TABLE requests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT    NOT NULL,
    custom_id   TEXT    NOT NULL,
    import_id   INTEGER NOT NULL REFERENCES imports (id),
    line        INTEGER,
    provider    TEXT    NOT NULL,
    endpoint    TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    body_hash   BLOB    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'queued',
    priority    INTEGER NOT NULL DEFAULT 0,
    deadline    REAL,
    text_chars  INTEGER NOT NULL,
    text_bytes  INTEGER NOT NULL,
    inputs      INTEGER NOT NULL DEFAULT 1,
    attempts    INTEGER NOT NULL DEFAULT 0,
    expiries    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL,
    reason      TEXT,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    -- batch-level rejections (a refused create, a whole-file validation failure) so far
    rejections  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (queue, custom_id)
);
-- Packing order within a provider group: priority descending, then enqueue order, across queues.
CREATE INDEX requests_ready ON requests (provider, endpoint, model, priority DESC, id)
    WHERE state = 'queued';
-- Requests waiting out a retry delay, by when they may go again.
CREATE INDEX requests_waiting ON requests (not_before) WHERE state = 'retry_wait';
-- Requests a budget holds back (released together when the budget changes).
CREATE INDEX requests_held ON requests (queue) WHERE state = 'held';

-- Request bodies, written once at enqueue and shared by every request with the same hash
-- (method, url and canonical body): no state change rewrites them (migration 0012).
CREATE TABLE request_bodies (
    hash BLOB PRIMARY KEY,
    body BLOB NOT NULL
);

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
    queue             TEXT,
    -- when it is next polled (0: at once) and at what interval (0: poll_interval)
    poll_at           REAL NOT NULL DEFAULT 0,
    poll_every        REAL NOT NULL DEFAULT 0
);
CREATE INDEX batches_open ON batches (state) WHERE state <> 'ingested';
-- A provider's batch id is unique at that provider only (two services may both say batch_1).
CREATE UNIQUE INDEX batches_provider_id ON batches (provider_batch_id, provider);

-- When the store-wide steps run next (`sweep`), whichever worker runs them.
CREATE TABLE schedules (
    name    TEXT PRIMARY KEY,
    next_at REAL NOT NULL
);

-- What batch-level failures taught the engine per packing group (model '' for a group of
-- several models): a smaller next batch, a lower enqueued-token quota, a pause.
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

-- Who may act on what: the store-wide engine lease and the claims (`batch:<id>`, `group:<key>`)
-- of the workers sharing the work, each with its holder's token, which every state-changing
-- write checks (a fencing token).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT    NOT NULL,
    token      INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    since      REAL
);

-- A request is sent once per attempt; its result is keyed by the attempt.
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  INTEGER NOT NULL REFERENCES requests (id),
    batch_id    INTEGER REFERENCES batches (id),
    line        INTEGER,
    state       TEXT    NOT NULL,
    outcome     TEXT,
    error_code  TEXT,
    error_message TEXT,
    created_at  REAL    NOT NULL,
    finished_at REAL
);
CREATE INDEX attempts_request ON attempts (request_id);
CREATE INDEX attempts_batch ON attempts (batch_id, line);

-- Terminal outcomes, in the order they were recorded (the export cursor is results.id).
CREATE TABLE results (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id          INTEGER NOT NULL UNIQUE REFERENCES attempts (id),
    request_id          INTEGER NOT NULL REFERENCES requests (id),
    status_code         INTEGER,
    provider_request_id TEXT,
    body                BLOB,
    error_code          TEXT,
    error_message       TEXT,
    input_tokens        INTEGER,
    output_tokens       INTEGER,
    cached_tokens       INTEGER, -- cache reads, inside input_tokens
    cache_write_5m_tokens INTEGER, -- Anthropic cache writes, inside input_tokens
    cache_write_1h_tokens INTEGER,
    reasoning_tokens    INTEGER, -- inside output_tokens
    usage_flag          TEXT, -- why the usage cannot be priced (missing, negative)
    price_tier          INTEGER NOT NULL DEFAULT 0, -- tier key from this request's input
    day                 INTEGER NOT NULL DEFAULT 0, -- UTC day recorded (days since 1970), for cost aggregates
    created_at          REAL    NOT NULL
);
CREATE INDEX results_request ON results (request_id);

-- Usage per pricing aggregate (UTC day, queue, provider, model, tier key), added to in the
-- transaction that records the results, so `llmbatch report` reads these few hundred rows
-- instead of grouping every result. `endpoint` is the least one seen (what the report used).
CREATE TABLE cost_totals (
    day                   INTEGER NOT NULL,
    queue                 TEXT    NOT NULL,
    provider              TEXT    NOT NULL,
    model                 TEXT    NOT NULL,
    price_tier            INTEGER NOT NULL,
    endpoint              TEXT    NOT NULL,
    requests              INTEGER NOT NULL,
    succeeded             INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    cached_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    flagged               INTEGER NOT NULL, -- results whose usage cannot be priced
    PRIMARY KEY (day, queue, provider, model, price_tier)
);

-- Append-only log of import- and batch-level changes.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL    NOT NULL,
    kind      TEXT    NOT NULL,
    import_id INTEGER,
    batch_id  INTEGER,
    detail    TEXT
);

-- Money per batch and queue, in 1e-6 USD: the worst case reserved with the intent, released
-- to the actual cost of the results at ingest. Budgets sum it per UTC day of the reservation.
-- A duplicate provider batch (kind 'duplicate') is charged when found: no budget planned it.
CREATE TABLE spend (
    batch_id   INTEGER NOT NULL REFERENCES batches (id),
    queue      TEXT    NOT NULL,
    day        INTEGER NOT NULL, -- UTC day of the reservation (days since 1970)
    reserved   INTEGER NOT NULL, -- the worst case still held, 0 once settled
    spent      INTEGER NOT NULL DEFAULT 0, -- the actual cost of the results, once settled
    settled_at REAL,
    -- the worst case reserved (kept once settled); planned, or a duplicate no budget planned;
    -- results whose cost is not known (flagged usage charged at their worst case, or an
    -- unpriced model's, counted 0); the price data that settled it
    worst      INTEGER,
    kind       TEXT NOT NULL DEFAULT 'planned',
    unpriced   INTEGER NOT NULL DEFAULT 0,
    prices     TEXT,
    PRIMARY KEY (batch_id, queue)
);
CREATE INDEX spend_day ON spend (day, queue);

-- The budgets every worker enforces (queue '*' is every queue together), set by `llmbatch
-- budget` or written by the first worker that brings its own to a store with none. A worker
-- may tighten them for itself, never loosen them; a reservation locks the rows it checks,
-- so racing workers see each other's reservations.
CREATE TABLE budgets (
    queue       TEXT    NOT NULL,
    period      TEXT    NOT NULL CHECK (period IN ('day', 'month')),
    limit_micro INTEGER NOT NULL CHECK (limit_micro > 0),
    updated_at  REAL    NOT NULL,
    PRIMARY KEY (queue, period)
);

-- The other budget settings per queue ('*': every queue): whether models without a price
-- may spend under a budget, and how much context a request with previous_response_id (or
-- another reference to context it does not carry) is assumed to bring.
CREATE TABLE budget_policy (
    queue                 TEXT    NOT NULL PRIMARY KEY,
    allow_unpriced        INTEGER,
    assume_context_tokens INTEGER CHECK (assume_context_tokens > 0),
    updated_at            REAL NOT NULL
);

-- Usage of every result line read per provider batch (what we counted), by the model that
-- answered and its price tier: compared with what the provider says, and what a duplicate
-- batch is charged.
CREATE TABLE batch_tally (
    batch_id              INTEGER NOT NULL REFERENCES batches (id),
    model                 TEXT    NOT NULL,
    price_tier            INTEGER NOT NULL,
    results               INTEGER NOT NULL,
    flagged               INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    cached_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    reasoning_tokens      INTEGER NOT NULL,
    PRIMARY KEY (batch_id, model, price_tier)
);

-- What the provider says a batch used (OpenAI's Batch object `usage`; Anthropic gives none).
CREATE TABLE provider_usage (
    batch_id         INTEGER NOT NULL PRIMARY KEY REFERENCES batches (id),
    input_tokens     INTEGER NOT NULL,
    cached_tokens    INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    seen_at          REAL NOT NULL,
    model            TEXT
);

-- Archives of ingested batches (their files copied where the user keeps data) and the
-- webhook outbox (see migration 0008).
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

-- Provider batches read and found not ours (another store's, another tool's): never read again.
CREATE TABLE judged_batches (
    provider          TEXT NOT NULL,
    provider_batch_id TEXT NOT NULL,
    judged_at         REAL NOT NULL,
    PRIMARY KEY (provider, provider_batch_id)
);

-- The workers sharing this store's work: each one's token (drawn once, carried by every lease
-- and claim it holds), the queues it serves (NULL: every one), when it was last seen, and
-- what it has done (`status`, the per-worker metrics).
CREATE TABLE workers (
    token      INTEGER PRIMARY KEY AUTOINCREMENT,
    holder     TEXT    NOT NULL UNIQUE,
    queues     TEXT,
    started_at REAL NOT NULL,
    seen_at    REAL NOT NULL,
    packed     INTEGER NOT NULL DEFAULT 0,
    submitted  INTEGER NOT NULL DEFAULT 0,
    polled     INTEGER NOT NULL DEFAULT 0,
    ingested   INTEGER NOT NULL DEFAULT 0,
    outcomes   INTEGER NOT NULL DEFAULT 0
);
