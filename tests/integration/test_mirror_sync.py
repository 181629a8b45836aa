"""The mirror, scenario by scenario: real `email_sync` flows against the local Gmail server (changes made in
the user's mailbox as Gmail makes them) and the Firestore emulator, local enrichment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.firestore.emails import EmailRepository
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from emailsync.local.seed import seed_account
from emailsync.models import SyncMode
from tests.fixtures.prefect import PrefectTestServer

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

TOKEN = "mirror-token"
PROVIDER_USER = "pu-mirror"


@pytest.fixture
def mirrored(
    firestore_client: firestore.Client,
    prefect_server: PrefectTestServer,
    sample_mailbox: Mailbox,
    make_gmail_server: Callable[..., GmailApiServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], tuple[GmailApiServer, Mailbox]]:
    """`mirrored(deleted_mail)`: a backfilled user of 20 sample messages; its Gmail server and mailbox."""

    def make(deleted_mail: str) -> tuple[GmailApiServer, Mailbox]:
        messages = sample_mailbox.newest_first()[:40:2]
        server = make_gmail_server(
            Mailbox.from_raw_messages([m.raw for m in messages], shift_dates=True),
            quota_units_per_second=None,
        )
        monkeypatch.setenv("GMAIL_API_ENDPOINT", server.url)
        monkeypatch.setenv("EMAILSYNC_QUOTA_UNITS_PER_SECOND", "5000")
        monkeypatch.setenv("EMAILSYNC_DELETED_MAIL", deleted_mail)
        get_settings.cache_clear()
        seed_account(firestore_client, provider_user_id=PROVIDER_USER, token=TOKEN, gmail_active=True)
        assert sync().mode is SyncMode.BACKFILL
        return server, server.mailbox_for(TOKEN)

    yield make
    get_settings.cache_clear()


def sync() -> Any:
    from flows.email_sync import email_sync

    return email_sync(PROVIDER_USER, trigger="schedule")


def documents(client: firestore.Client) -> dict[str, dict[str, Any]]:
    emails = client.collection("providerUsers").document(PROVIDER_USER).collection("emails")
    return {snapshot.id: snapshot.to_dict() or {} for snapshot in emails.stream()}


def api_calls(server: GmailApiServer) -> dict[str, int]:
    """Gmail API calls by method (a batch request itself is no call: its parts are)."""
    return {method: n for method, n in server.stats.requests_by_method.items() if method != "batch"}


def gmail_default_listing(mailbox: Mailbox) -> dict[str, list[str]]:
    matches, _ = mailbox.search(excluded_label_ids=("SPAM", "TRASH"))
    return {message.id: sorted(message.label_ids) for message in matches}


def test_reads_stars_archives_trash_spam_and_deletions_are_mirrored_without_downloading_or_enriching_again(
    mirrored, firestore_client, sample_mailbox
):
    server, mailbox = mirrored("remove")
    before = documents(firestore_client)
    ids = sorted(before)
    read, starred, archived, trashed, spammed, deleted = ids[:3], ids[3:5], ids[5], ids[6], ids[7], ids[8]
    for message_id in read:
        mailbox.modify(message_id, remove=["UNREAD"])
    for message_id in starred:
        mailbox.modify(message_id, add=["STARRED"])
    mailbox.modify(archived, remove=["INBOX"])
    mailbox.trash(trashed)
    mailbox.modify(spammed, add=["SPAM"], remove=["INBOX"])
    mailbox.delete(deleted)
    spam = mailbox.insert_message(sample_mailbox.newest_first()[1].raw, ["SPAM", "UNREAD"])
    draft = mailbox.insert_message(sample_mailbox.newest_first()[3].raw, ["DRAFT"])
    server.reset_stats()

    summary = sync()

    assert summary.mode is SyncMode.INCREMENTAL
    # the draft is the one message downloaded and enriched; every other change came from history alone
    assert api_calls(server) == {"history.list": 1, "messages.get": 1}
    assert summary.emails_enriched == 1 and summary.emails_removed == 3
    after = documents(firestore_client)
    assert {i: sorted(d["labelIds"]) for i, d in after.items()} == gmail_default_listing(mailbox)
    assert spam.id not in after and draft.id in after and {trashed, spammed, deleted}.isdisjoint(after)
    assert not any(after[i]["unread"] for i in read) and all(after[i]["starred"] for i in starred)
    assert after[archived]["inInbox"] is False and after[ids[9]]["inInbox"] is True
    assert all(after[i]["enrichment"] == before[i]["enrichment"] for i in before if i in after)

    mailbox.untrash(trashed)
    mailbox.modify(spammed, add=["INBOX"], remove=["SPAM"])
    server.reset_stats()

    back = sync()

    restored = documents(firestore_client)
    assert {i: sorted(d["labelIds"]) for i, d in restored.items()} == gmail_default_listing(mailbox)
    # downloaded again (the document was removed), but given back the enrichment it had
    assert api_calls(server) == {"history.list": 1, "messages.get": 2} and back.emails_enriched == 0
    assert restored[trashed]["enrichment"] == before[trashed]["enrichment"]
    assert restored[spammed]["summary"] == before[spammed]["summary"]


def test_with_deleted_mail_kept_a_trashed_message_is_a_tombstone_out_of_search_and_comes_back_from_it(
    mirrored, firestore_client
):
    server, mailbox = mirrored("keep")
    emails = EmailRepository(firestore_client)
    before = documents(firestore_client)
    trashed = sorted(before)[0]
    own_embedding = list(before[trashed]["embedding"])
    assert emails.find_nearest(PROVIDER_USER, own_embedding, limit=1)[0].message_id == trashed
    mailbox.trash(trashed)

    sync()

    tombstone = documents(firestore_client)[trashed]
    assert tombstone["deletedAt"] is not None and "TRASH" in tombstone["labelIds"]
    assert not tombstone["inInbox"] and not tombstone["unread"]
    nearest = emails.find_nearest(PROVIDER_USER, own_embedding, limit=3)
    assert trashed not in [record.message_id for record in nearest] and len(nearest) == 3
    mailbox.untrash(trashed)
    server.reset_stats()

    back = sync()

    assert api_calls(server) == {"history.list": 1} and back.emails_enriched == 0
    restored = documents(firestore_client)[trashed]
    assert restored["deletedAt"] is None and restored["enrichment"] == before[trashed]["enrichment"]
    assert sorted(restored["labelIds"]) == sorted(mailbox.get(trashed).label_ids)


def test_the_client_reads_every_history_record_type_and_lists_labels_without_a_messages_get(sample_mailbox):
    from emailsync.config import Settings
    from emailsync.gmail.client import GmailClient
    from emailsync.models import ProviderCredentials

    with GmailApiServer(sample_mailbox, quota_units_per_second=None) as server:
        client = GmailClient(ProviderCredentials(token=TOKEN), Settings(gmail_api_endpoint=server.url))
        start = client.get_profile().history_id
        mailbox = server.mailbox_for(TOKEN)
        first, second, third = [message.id for message in mailbox.newest_first()[:3]]
        mailbox.modify(first, add=["STARRED"], remove=["UNREAD"])
        mailbox.delete(second)
        mailbox.trash(third)
        added = mailbox.insert_message(b"Subject: hello\n\nhi", ["INBOX", "UNREAD"])

        changes = client.list_history(start).changes

        assert [(c.kind, c.message_id) for c in changes] == [
            ("labelAdded", first),
            ("labelRemoved", first),
            ("messageDeleted", second),
            ("labelAdded", third),
            ("messageAdded", added.id),
        ]
        assert changes[0].changed_label_ids == ["STARRED"] and "STARRED" in (changes[0].label_ids or [])
        server.reset_stats()
        listing = client.list_mailbox_labels()
        assert {i: sorted(labels) for i, labels in listing.items()} == gmail_default_listing(mailbox)
        assert "messages.get" not in server.stats.requests_by_method


def test_last_history_id_only_ever_moves_forward(firestore_client):
    from emailsync.firestore.sync_state import SyncStateRepository

    states = SyncStateRepository(firestore_client)
    states.set_last_history_id(PROVIDER_USER, "500")
    states.set_last_history_id(PROVIDER_USER, "400")
    assert states.get(PROVIDER_USER).last_history_id == "500"
    assert states.acquire_lease(PROVIDER_USER, "sync-1", "worker", 60)
    assert states.checkpoint(PROVIDER_USER, "sync-1", None, 60, history_id="450")
    assert states.get(PROVIDER_USER).last_history_id == "500"
    assert states.checkpoint(PROVIDER_USER, "sync-1", None, 60, history_id="600")
    assert states.get(PROVIDER_USER).last_history_id == "600"
