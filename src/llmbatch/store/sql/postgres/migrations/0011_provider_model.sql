-- 0011: the model a provider says ran a batch (the Batch object's `model`, issue 20), kept
-- beside the usage it reports, for `status`, `show` and the receipt's comparison. NULL for
-- batches recorded before, and where the provider names none.

ALTER TABLE provider_usage ADD COLUMN model TEXT;
