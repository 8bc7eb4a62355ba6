-- Proof of ownership and the store's home (store/ownership.py).

-- name: judged_ids
SELECT provider_batch_id FROM judged_batches WHERE provider = :provider

-- name: first_intent_at
-- When the store first committed an intent for a provider: the sweep looks back no further.
SELECT MIN(created_at) FROM batches WHERE provider = :provider AND intent_id IS NULL

-- name: judge_batch
INSERT INTO judged_batches (provider, provider_batch_id, judged_at)
VALUES (:provider, :provider_batch_id, :now)
ON CONFLICT (provider, provider_batch_id) DO NOTHING

-- name: forget_judged
DELETE FROM judged_batches WHERE judged_at < :before

-- name: nonce_of
SELECT nonce FROM batches WHERE id = :id

-- name: set_proof_wait
UPDATE batches SET proof_wait_until = :until WHERE id = :id AND provider_batch_id IS NULL

-- name: proof_waits
SELECT id, provider, request_count, proof_wait_until FROM batches
WHERE state = 'submitting' AND proof_wait_until IS NOT NULL ORDER BY id

-- name: open_batch_count
SELECT COUNT(*) FROM batches WHERE state <> 'ingested'

-- name: max_batch_id
SELECT COALESCE(MAX(id), 0) FROM batches

-- name: open_before
SELECT id, intent_id FROM batches WHERE state <> 'ingested' AND id <= :before ORDER BY id

-- name: delete_meta
DELETE FROM meta WHERE key = :key

-- name: batch_ids_upto
SELECT id FROM batches WHERE id <= :before

-- name: set_nonce
UPDATE batches SET nonce = :nonce WHERE id = :id
