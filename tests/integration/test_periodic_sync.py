"""The hourly sweep over 20 connected users: real emulator, real Gmail server, real flows."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.local.seed import seed_account
from emailsync.sweep import Outcome
from flows.periodic_sync import periodic_email_sync
from tests.fixtures.gmail import SAMPLE_MBOX

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

USERS = [f"pu-periodic-{n:02d}" for n in range(20)]
MAILBOX_SIZE = 3
NEW_MESSAGES = {"pu-periodic-01": 2, "pu-periodic-07": 1, "pu-periodic-13": 3}


@cache
def _sample_raws() -> tuple[bytes, ...]:
    return tuple(read_mbox(SAMPLE_MBOX))


def test_periodic_sync_stores_exactly_the_new_messages_and_idle_users_cost_one_history_call(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    prefect_server: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    gmail_server.configure(quota_units_per_second=0)  # unlimited: 20 users' syncs, quickly
    monkeypatch.setenv("GMAIL_API_ENDPOINT", gmail_server.url)
    get_settings.cache_clear()
    raws = _sample_raws()
    for n, provider_user_id in enumerate(USERS):
        token = f"token-{provider_user_id}"
        start = n * MAILBOX_SIZE
        gmail_server.add_mailbox(token, Mailbox.from_raw_messages(raws[start : start + MAILBOX_SIZE]))
        seed_account(
            firestore_client,
            provider_user_id=provider_user_id,
            family_id=f"family-{n:02d}",
            email=f"user{n:02d}@example.com",
            token=token,
            gmail_active=True,
        )
    first = periodic_email_sync()
    assert sorted(o.provider_user_id for o in first.of(Outcome.STARTED)) == USERS, first.summary_lines()
    assert {o.sync_result for o in first.outcomes} == {"completed"}, first.summary_lines()
    state = SyncStateRepository(firestore_client)
    assert all(state.get(user).backfill_completed for user in USERS)

    emails = EmailRepository(firestore_client)
    before = {user: set(emails.list_ids(user)) for user in USERS}
    assert all(len(ids) == MAILBOX_SIZE for ids in before.values())
    new_ids: dict[str, set[str]] = {}
    spare = iter(raws[len(USERS) * MAILBOX_SIZE :])
    for provider_user_id, count in NEW_MESSAGES.items():
        new_ids[provider_user_id] = {
            gmail_server.add_message(next(spare), token=f"token-{provider_user_id}") for _ in range(count)
        }
    gmail_server.reset_stats()

    second = periodic_email_sync()

    started = {o.provider_user_id for o in second.of(Outcome.STARTED)}
    assert started == set(NEW_MESSAGES), second.summary_lines()
    assert {o.sync_result for o in second.of(Outcome.STARTED)} == {"completed"}
    assert sorted(o.provider_user_id for o in second.of(Outcome.IDLE)) == sorted(set(USERS) - started)
    for user in USERS:
        assert set(emails.list_ids(user)) == before[user] | new_ids.get(user, set()), user
    calls = gmail_server.stats.requests_by_method
    # The sweep's check is one history.list per user; a user with changes makes one more in its sync.
    assert calls.get("history.list", 0) == len(USERS) + len(NEW_MESSAGES)
    assert calls.get("messages.get", 0) == sum(NEW_MESSAGES.values())
    assert calls.get("messages.list", 0) == 0
