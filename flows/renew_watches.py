"""`renew_gmail_watches`: keeps every connected user's Gmail watch alive (scheduled deployment
`renew-gmail-watches`).

Renews the watches that expire within `EMAILSYNC_GMAIL_WATCH_RENEW_BEFORE_SECONDS`, re-creates lapsed
or missing ones, stops those of users no longer connected. A user whose renewal failed is named in the
result and tried again by the next run, well before the watch lapses. Nothing to do when no push topic
is configured. Run once with `python -m flows.renew_watches`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from emailsync.config import get_settings
from emailsync.firestore.client import get_firestore_client
from emailsync.push.pubsub import push_target
from emailsync.push.watches import GmailWatches, RenewalResult


@flow(name="renew-gmail-watches", log_prints=True)
def renew_gmail_watches() -> RenewalResult:
    logger = get_run_logger()
    target = push_target(get_settings())
    if target is None:
        logger.info("EMAILSYNC_GMAIL_PUSH_TOPIC is not set: no Gmail push, no watches to renew")
        return RenewalResult()
    result = GmailWatches(target.topic, get_firestore_client()).renew()
    for line in result.summary_lines():
        logger.info("%s", line)
    return result


if __name__ == "__main__":
    for line in renew_gmail_watches().summary_lines():
        print(line)
