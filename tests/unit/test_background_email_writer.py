"""`BackgroundEmailWriter`: a batch's email writes overlap its enrichment, yet the batch ends stored."""

from __future__ import annotations

import threading

import pytest

from emailsync.models import EmailRecord
from emailsync.sync.writer import BackgroundEmailWriter


class _RecordingEmails:
    """Stands in for EmailRepository.upsert_many: records what was written, can fail one chunk."""

    def __init__(self, fail_on_chunk: int | None = None) -> None:
        self.written: list[str] = []
        self.threads: set[str] = set()
        self._chunks = 0
        self._fail_on_chunk = fail_on_chunk

    def upsert_many(self, provider_user_id: str, records: list[EmailRecord]) -> int:
        self._chunks += 1
        self.threads.add(threading.current_thread().name)
        if self._chunks == self._fail_on_chunk:
            raise RuntimeError("Firestore commit failed: deadline exceeded")
        self.written += [record.message_id for record in records]
        return len(records)


def _emails(*ids: str) -> list[EmailRecord]:
    return [EmailRecord(message_id=message_id, app_user_id="app-1") for message_id in ids]


def test_every_submitted_chunk_is_stored_in_order_off_the_calling_thread_by_the_time_wait_returns() -> None:
    emails = _RecordingEmails()
    with BackgroundEmailWriter(emails, "pu-1") as writer:  # type: ignore[arg-type]
        writer.submit(_emails("a", "b"))
        writer.submit(_emails("c"))
        assert writer.wait() == 3
    assert emails.written == ["a", "b", "c"]
    assert threading.current_thread().name not in emails.threads


def test_a_failed_write_fails_the_batch_with_the_storage_error_when_it_waits_for_its_writes() -> None:
    emails = _RecordingEmails(fail_on_chunk=2)
    writer = BackgroundEmailWriter(emails, "pu-1")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="Firestore commit failed"), writer:
        writer.submit(_emails("a"))
        writer.submit(_emails("b"))
        writer.wait()
    assert "a" in emails.written and "b" not in emails.written
