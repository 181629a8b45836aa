"""Sync ids: unique, sortable by time, readable in `emailsync status`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from emailsync.models import SyncTrigger


def new_sync_id(provider_user_id: str, trigger: SyncTrigger | str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{provider_user_id}-{SyncTrigger(trigger).value}-{stamp}-{uuid.uuid4().hex[:8]}"
