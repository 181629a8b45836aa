"""The hourly sweep over a fleet of connected users: real emulator, real Gmail server, real flows. The
suite sweeps 8 users; `make soak` sweeps 20."""

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

MAILBOX_SIZE = 3
# fleet size -> new messages per user (by index) before the second sweep; every other user stays idle
FLEETS = {8: {1: 2, 4: 1, 6: 3}, 20: {1: 2, 7: 1, 13: 3}}


@cache
def _sample_raws() -> tuple[bytes, ...]:
    return tuple(read_mbox(SAMPLE_MBOX))


def _user(n: int) -> str:
    return f"pu-periodic-{n:02d}"


@pytest.mark.parametrize(
    "fleet", [pytest.param(8, id="8-users"), pytest.param(20, id="20-users", marks=pytest.mark.soak)]
)
def test_periodic_sync_stores_exactly_the_new_messages_and_idle_users_cost_one_history_call(
    fleet: int,
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    prefect_server: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    users = [_user(n) for n in range(fleet)]
    new_messages = {_user(n): count for n, count in FLEETS[fleet].items()}
    gmail_server.configure(quota_units_per_second=0)  # unlimited: the fleet's syncs, quickly
    monkeypatch.setenv("GMAIL_API_ENDPOINT", gmail_server.url)
    get_settings.cache_clear()
    raws = _sample_raws()
    for n, provider_user_id in enumerate(users):
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
    assert sorted(o.provider_user_id for o in first.of(Outcome.STARTED)) == users, first.summary_lines()
    assert {o.sync_result for o in first.outcomes} == {"completed"}, first.summary_lines()
    state = SyncStateRepository(firestore_client)
    assert all(state.get(user).backfill_completed for user in users)

    emails = EmailRepository(firestore_client)
    before = {user: set(emails.list_ids(user)) for user in users}
    assert all(len(ids) == MAILBOX_SIZE for ids in before.values())
    new_ids: dict[str, set[str]] = {}
    spare = iter(raws[len(users) * MAILBOX_SIZE :])
    for provider_user_id, count in new_messages.items():
        new_ids[provider_user_id] = {
            gmail_server.add_message(next(spare), token=f"token-{provider_user_id}") for _ in range(count)
        }
    gmail_server.reset_stats()

    second = periodic_email_sync()

    started = {o.provider_user_id for o in second.of(Outcome.STARTED)}
    assert started == set(new_messages), second.summary_lines()
    assert {o.sync_result for o in second.of(Outcome.STARTED)} == {"completed"}
    assert sorted(o.provider_user_id for o in second.of(Outcome.IDLE)) == sorted(set(users) - started)
    for user in users:
        assert set(emails.list_ids(user)) == before[user] | new_ids.get(user, set()), user
    calls = gmail_server.stats.requests_by_method
    # The sweep's check is one history.list per user; a user with changes makes one more in its sync.
    assert calls.get("history.list", 0) == len(users) + len(new_messages)
    assert calls.get("messages.get", 0) == sum(new_messages.values())
    assert calls.get("messages.list", 0) == 0
