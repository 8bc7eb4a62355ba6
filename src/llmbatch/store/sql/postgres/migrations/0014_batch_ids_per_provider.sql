-- 0014: a provider's batch id is unique at that provider only. Two OpenAI-compatible services
-- run by their owners may both number their batches batch_1, batch_2, ...: the column's own
-- UNIQUE refused the second one's id and its requests stayed packed. The uniqueness is now
-- (provider, provider_batch_id), an index beside the table (as on SQLite).

ALTER TABLE batches DROP CONSTRAINT batches_provider_batch_id_key;
CREATE UNIQUE INDEX batches_provider_id ON batches (provider_batch_id, provider);
