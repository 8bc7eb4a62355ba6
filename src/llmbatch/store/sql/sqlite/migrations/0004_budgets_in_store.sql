-- 0004: budgets live in the store (issue 19). `budgets` holds the caps every worker enforces
-- (set by `llmbatch budget`, or written by the first worker that brings its own to a store
-- with none); `budget_policy` the rest of the budget settings per queue. `spend` keeps each
-- reservation's worst case once settled, says which spend no budget planned (a duplicate
-- provider batch) and how many results could not be priced. `batch_tally` is the usage of
-- every result line read per provider batch (what we counted); `provider_usage` what the
-- provider says the batch used (OpenAI's Batch object `usage`).

ALTER TABLE spend ADD COLUMN worst INTEGER;
ALTER TABLE spend ADD COLUMN kind TEXT NOT NULL DEFAULT 'planned';
ALTER TABLE spend ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE spend ADD COLUMN prices TEXT;
UPDATE spend SET worst = reserved WHERE settled_at IS NULL;

CREATE TABLE budget_policy (
    queue                 TEXT    NOT NULL PRIMARY KEY,
    allow_unpriced        INTEGER,
    assume_context_tokens INTEGER CHECK (assume_context_tokens > 0),
    updated_at            REAL NOT NULL
);

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

CREATE TABLE provider_usage (
    batch_id         INTEGER NOT NULL PRIMARY KEY REFERENCES batches (id),
    input_tokens     INTEGER NOT NULL,
    cached_tokens    INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    seen_at          REAL NOT NULL
);
