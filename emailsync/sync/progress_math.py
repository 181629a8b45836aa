"""Progress percentages shown to the user while a sync runs.

Percent of the expected total when the total is known; while it is not, the number of batches done
stands in for it on a curve that approaches but never reaches the cap. Only completion shows 100.
"""

from __future__ import annotations

MAX_RUNNING_PERCENT = 99
# With an unknown total, `batches / (batches + BATCH_PROXY_HALF_WAY)` of the way: 10 batches show 49%.
BATCH_PROXY_HALF_WAY = 10


def batch_proxy_percent(batches: int) -> int:
    if batches <= 0:
        return 0
    return int(MAX_RUNNING_PERCENT * batches / (batches + BATCH_PROXY_HALF_WAY))


def percent_complete(processed: int, total_estimate: int | None, batches: int) -> int:
    """Progress of a running sync, 0..99."""
    if total_estimate is not None and total_estimate > 0:
        percent = (100 * max(processed, 0)) // total_estimate
    else:
        percent = batch_proxy_percent(batches)
    return max(0, min(MAX_RUNNING_PERCENT, percent))


def monotone_percent(previous: int, current: int) -> int:
    """Progress never goes back, even when an estimate turns out too small or a batch is redone."""
    return max(previous, current)
