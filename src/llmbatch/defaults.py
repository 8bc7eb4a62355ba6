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
