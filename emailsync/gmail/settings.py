"""Constants of the Gmail client and the MIME parser (limits, batch sizes, retry policy).

Quota figures themselves (units per second, per-method costs) are runtime settings in
`emailsync.config.Settings`, because they differ between Google projects.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# ------------------------------------------------------------------------------------------ batches
MAX_BATCH_SIZE = 100  # Gmail rejects batches of more than 100 calls
INITIAL_BATCH_SIZE = 50
BATCH_GROWTH_STEP = 10  # added after each batch without a 429
MIN_BATCH_SIZE = 1

# ------------------------------------------------------------------------------------------ listing
MAX_LIST_PAGE_SIZE = 500  # messages.list maxResults ceiling
DEFAULT_LIST_PAGE_SIZE = 100
MAX_HISTORY_PAGE_SIZE = 500

# ------------------------------------------------------------------------------------------ pacing
# The Gmail per-user bucket holds about one second of units. We refill a little slower than the quota and
# keep our burst below that one second, so the slack absorbs scheduling jitter on a busy machine instead
# of turning it into 429s.
PACING_RATE_FRACTION = 0.98
PACING_BURST_SECONDS = 0.7
# A fresh bucket starts half full: another client may just have emptied the server's bucket for this user.
PACING_INITIAL_FILL = 0.5

# ------------------------------------------------------------------------------------------ HTTP
HTTP_TIMEOUT_SECONDS = 60.0
GOOGLE_BATCH_URI = "https://gmail.googleapis.com/batch/gmail/v1"
BATCH_PATH = "batch/gmail/v1"


class RetryPolicy(BaseModel):
    """The one retry policy of every Gmail call: Retry-After when the server gives one, else these delays."""

    model_config = ConfigDict(frozen=True)

    delays_seconds: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    max_attempts: int = 6  # first try included
    jitter_fraction: float = 0.25  # each delay is stretched by up to this fraction, at random
    max_retry_after_seconds: float = 120.0  # a Retry-After longer than this is capped

    def delay(self, retry_number: int) -> float:
        """Base delay before retry `retry_number` (1 = first retry), without jitter."""
        if not self.delays_seconds:
            return 0.0
        index = min(max(retry_number, 1), len(self.delays_seconds)) - 1
        return self.delays_seconds[index]


DEFAULT_RETRY_POLICY = RetryPolicy()

# ------------------------------------------------------------------------------------------ MIME
MAX_BODY_BYTES = 700_000  # UTF-8 bytes of body_text; keeps an email document under Firestore's 1 MiB
MAX_RAW_HEADERS_BYTES = 32 * 1024
MAX_HEADER_CHARS = 8_192  # subject / sender, and each of to / cc in total
MAX_ADDRESSES = 500  # per address header list
MAX_ATTACHMENTS = 200
MAX_PARSE_ERRORS = 50
MAX_MIME_DEPTH = 40  # nested multiparts deeper than this are not walked
