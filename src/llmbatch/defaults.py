"""Every default in one place."""

from __future__ import annotations

from typing import Final

DB: Final = "llmbatch.db"
QUEUE: Final = "default"
PROVIDER: Final = "openai"
CONFIG_FILE: Final = "llmbatch.toml"
BUSY_TIMEOUT_S: Final = 30.0
MAX_LINE_BYTES: Final = 16 * 1024 * 1024
BATCH_WINDOW_S: Final = 24 * 3600  # the completion window: a batch sent now may end this late

# The engine lease. A worker renews it before every call that spends money (an upload, a
# create, a cancel), so it must outlast the longest such call: its client timeout plus a
# margin for the database round trips around it and for clocks that disagree between hosts.
# Otherwise a standby could take the lease over while the create is still on the wire, find
# nothing yet, and create the batch a second time. Settings load refuses a timeout that
# does not fit.
LEASE_TTL_S: Final = 600.0
# An upload or a create normally answers in seconds (a 200 MB upload on a slow link in a
# few minutes), but the SDK's own default is 600 s: as long as the lease, leaving it no room.
# After an unknown outcome a reconcile waits this timeout plus the settle window before it
# may create again, so it is also how long an interrupted create costs.
SUBMIT_TIMEOUT_S: Final = 120.0
# What a renewal leaves beyond the call: at most 30 s, or a tenth of a short lease.
LEASE_MARGIN_S: Final = 30.0
LEASE_MARGIN_SHARE: Final = 0.1

# A result line longer than this is an anomaly, skipped while streaming (never read whole):
# well above any legitimate result (image results run to several MB).
MAX_RESULT_LINE_BYTES: Final = 64 * 1024 * 1024

# Proof of ownership (docs/reliability.md). An intent whose create may have acted unrecorded,
# with a running batch of its size that cannot yet say whose it is (an Anthropic batch shows
# its custom ids only once it has ended), waits at most this long after its create before it
# creates again: a batch's completion window, so the one it waits for has surely ended.
MAX_PROOF_WAIT_S: Final = 24 * 3600.0
# The sweep looks for unrecorded batches of ours back to the oldest open intent, and at least
# this far back (a duplicate the list showed late, after its intent was done).
SWEEP_RECENT_S: Final = 3600.0

# -- [engine]: how the engine schedules its work (tick.EngineSettings) --------------------------
POLL_INTERVAL_S: Final = 30.0
MAX_POLL_INTERVAL_S: Final = 600.0
FIRST_POLL_S: Final = 1.0  # after a submit, poll this soon, then back off (doubling)
# A batch in flight less than this long is polled every poll_interval even while nothing
# moves (a short batch is found done within one interval, as a loop polling at a fixed
# interval finds it); only then does the interval back off towards max_poll_interval.
STEADY_POLL_S: Final = 60.0
RETRIEVE_BUDGET: Final = 5
SETTLE_S: Final = 120.0  # wait this long for a lagging list before re-creating
DELETE_FILES: Final = True
BATCHES_PER_HOUR: Final = 2000
INGEST_CHUNK: Final = 5000
BACKOFF_S: Final = 30.0
SWEEP_INTERVAL_S: Final = 600.0  # how often to look for our batches the store does not know
MAX_BATCH_REJECTIONS: Final = 3  # a request whose batch is refused this often fails
# Requests of a batch whose results the provider archived before they were read: "requeue"
# (sent again) or "fail" (a result with the reason "archived").
ARCHIVED: Final = "requeue"

# -- [engine.retry] (retry.RetryPolicy) --------------------------------------------------------
MAX_ATTEMPTS: Final = 3
MAX_EXPIRIES: Final = 5
RETRY_BASE_S: Final = 30.0
RETRY_MAX_S: Final = 3600.0
RETRY_JITTER: Final = 0.25

# -- [budgets] ---------------------------------------------------------------------------------
BUDGET_PERIOD: Final = "day"

# -- [archive] (archive.ArchiveSettings, targets.TargetSettings) -------------------------------
ARCHIVE_CHECKSUMS: Final = "when_supported"  # "when_required" for servers that refuse boto3's
ARCHIVE_PART_MB: Final = 8  # multipart part size (and the size from which an upload is multipart)
ARCHIVE_TIMEOUT_S: Final = 30.0  # seconds per S3 call before it counts as failed
ARCHIVE_BACKOFF_S: Final = 30.0  # the first pause after a failure, doubling per try
ARCHIVE_TICK_S: Final = 60.0  # archiving stops for this tick once it has taken this long

# -- [webhooks] (webhooks.WebhookSettings) -----------------------------------------------------
WEBHOOK_TIMEOUT_S: Final = 5.0  # seconds a receiver may take to answer
WEBHOOK_BACKOFF_S: Final = 5.0  # the first pause after a failed delivery, doubling
WEBHOOK_MAX_BACKOFF_S: Final = 3600.0
WEBHOOK_TICK_S: Final = 5.0  # delivery stops for this tick once it has taken this long

# -- every built-in provider's `[providers.NAME]` ----------------------------------------------
PROVIDER_TIMEOUT_S: Final = 600.0  # the SDK client's timeout (`[providers.NAME] timeout`)
CLOCK_SKEW_S: Final = 300.0  # how far a provider's clock may be behind ours

# -- the command line --------------------------------------------------------------------------
PRIORITY: Final = 0  # enqueue --priority: higher goes first
EXPECTED_OUTPUT_TOKENS: Final = 500  # estimate: tokens a request is assumed to write
WATCH_INTERVAL_S: Final = 2.0  # status --watch
BATCHES_LIMIT: Final = 20  # batches --limit
# What the dashboard, a worker's /metrics and the emulator listen on: this machine only.
HOST: Final = "127.0.0.1"
DASHBOARD_PORT: Final = 8080
EMULATOR_PORT: Final = 8000
EMULATOR_TIME_SCALE: Final = 1.0  # emulated seconds per real second
DASHBOARD_MAX_AGE_S: Final = 2.0  # the dashboard reads the store's figures at most this often
METRICS_MAX_AGE_S: Final = 15.0  # and /metrics (a Prometheus scrape interval)

# -- the library's clients (client.AsyncBatchClient, blocking.BatchClient, Queue) --------------
CLIENT_WATCH_INTERVAL_S: Final = 1.0  # how often a client looks for its results
CLIENT_WINDOW_S: Final = 0.05  # calls made this close together are enqueued together
CLIENT_MAX_GROUP: Final = 5000  # and at most this many at once
PACK_DELAY_S: Final = 1.0  # the client's engine thread waits this long for more calls to pack
ENGINE_THREAD_MAX_SLEEP_S: Final = 5.0  # and sleeps at most this long between ticks
RESULT_INTERVAL_S: Final = 1.0  # Queue.result(): how often it looks
