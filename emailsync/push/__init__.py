"""Gmail push: `users.watch` registrations kept alive (`watches`), the Pub/Sub topic and subscription
(`pubsub`), the streaming-pull listener (`listener`) and the per-user coalescing of syncs (`coalesce`).

Push is on when `EMAILSYNC_GMAIL_PUSH_TOPIC` is set. Plain Python: `deployments/push.py` wires it to
the flows.
"""
