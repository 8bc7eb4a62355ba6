-- 0004: budgets live in the store (issue 19). `budgets` holds the caps every worker enforces
-- (set by `llmbatch budget`, or written by the first worker that brings its own to a store
-- with none); `budget_policy` the rest of the budget settings per queue. `spend` keeps each
-- reservation's worst case once settled, says which spend no budget planned (a duplicate
-- provider batch) and how many results could not be priced. `batch_tally` is the usage of
-- every result line read per provider batch (what we counted); `provider_usage` what the
-- provider says the batch used (OpenAI's Batch object `usage`).

ALTER TABLE spend ADD COLUMN worst BIGINT;
ALTER TABLE spend ADD COLUMN kind TEXT NOT NULL DEFAULT 'planned';
ALTER TABLE spend ADD COLUMN unpriced BIGINT NOT NULL DEFAULT 0;
ALTER TABLE spend ADD COLUMN prices TEXT;
UPDATE spend SET worst = reserved WHERE settled_at IS NULL;

CREATE TABLE budget_policy (
    queue                 TEXT    NOT NULL PRIMARY KEY,
    allow_unpriced        BIGINT,
    assume_context_tokens BIGINT CHECK (assume_context_tokens > 0),
    updated_at            DOUBLE PRECISION NOT NULL
);

CREATE TABLE batch_tally (
    batch_id              BIGINT NOT NULL REFERENCES batches (id),
    model                 TEXT    NOT NULL,
    price_tier            BIGINT NOT NULL,
    results               BIGINT NOT NULL,
    flagged               BIGINT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    cached_tokens         BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    reasoning_tokens      BIGINT NOT NULL,
    PRIMARY KEY (batch_id, model, price_tier)
);

CREATE TABLE provider_usage (
    batch_id         BIGINT NOT NULL PRIMARY KEY REFERENCES batches (id),
    input_tokens     BIGINT NOT NULL,
    cached_tokens    BIGINT NOT NULL,
    output_tokens    BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    seen_at          DOUBLE PRECISION NOT NULL
);
