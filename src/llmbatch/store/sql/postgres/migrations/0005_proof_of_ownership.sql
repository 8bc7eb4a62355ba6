-- 0005: proof of ownership (issue 15). Every intent carries a random `nonce` besides the
-- store id, in what the provider keeps with its batch (OpenAI/Azure metadata and upload
-- name, Anthropic custom ids); reconcile, the sweep and ingest act only on batches that
-- prove it. `proof_wait_until` is set while an intent waits for same-size batches it
-- cannot tell apart to end and be read (at most `max_proof_wait`). `judged_batches`
-- remembers provider batches read and found not ours, so none is read twice. The store's
-- home (where it lives) is kept in `meta`, written when the store is next opened.

ALTER TABLE batches ADD COLUMN nonce TEXT;
ALTER TABLE batches ADD COLUMN proof_wait_until DOUBLE PRECISION;

CREATE TABLE judged_batches (
    provider          TEXT NOT NULL,
    provider_batch_id TEXT NOT NULL,
    judged_at         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, provider_batch_id)
);
