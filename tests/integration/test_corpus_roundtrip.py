"""Every message of the full corpus survives server → real Gmail client → parser: none lost, none raising."""

from __future__ import annotations

import mailbox as std_mailbox
from collections.abc import Callable
from pathlib import Path

import pytest

from emailsync.config import Settings
from emailsync.gmail.client import GmailClient
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.models import EmailRecord, ProviderCredentials

pytestmark = pytest.mark.integration


def read_corpus(corpus_dir: Path) -> list[bytes]:
    return [raw for path in sorted(corpus_dir.glob("*.mbox")) for raw in read_mbox(path)]


def test_whole_corpus_is_fetched_and_parsed_without_loss(
    corpus_dir: Path, make_gmail_server: Callable[..., GmailApiServer]
) -> None:
    raws = read_corpus(corpus_dir)
    server_mailbox = Mailbox.from_raw_messages(raws)
    server = make_gmail_server(server_mailbox, quota_units_per_second=0)  # throughput, not pacing, here
    client = GmailClient(
        ProviderCredentials(token="corpus-roundtrip"),
        Settings(gmail_api_endpoint=server.url, quota_units_per_second=1_000_000),
    )

    listed = client.list_all_message_ids()
    fetched = []
    for start in range(0, len(listed), 250):  # pages bigger than one batch: the client splits them
        fetched.extend(client.get_messages(listed[start : start + 250]))
    records = [EmailRecord(**message.parse().model_dump(), app_user_id="corpus-user") for message in fetched]

    server_ids = {message.id for message in server_mailbox.newest_first()}
    expected = sum(len(std_mailbox.mbox(str(p), create=False)) for p in corpus_dir.glob("*.mbox"))
    assert len(raws) == expected == len(server_ids)  # 1023 today: 975 SpamAssassin + 48 CPython edge cases
    assert len(listed) == len(raws) and set(listed) == server_ids
    assert [message.id for message in fetched] == listed
    assert all(message.raw == server_mailbox.get(message.id).raw for message in fetched)  # byte for byte
    assert len(records) == len(raws) and {record.message_id for record in records} == server_ids
    assert all(record.date is not None for record in records)  # Date header or Gmail's internalDate
    assert server.stats.responses_by_status.get(429, 0) == 0 and client.stats.retries == 0
