"""Reading an mbox for the local Gmail server: entries as stored, and the internalDate of each."""

from __future__ import annotations

import email.message
import mailbox as std_mailbox
from collections.abc import Iterable
from email.parser import BytesHeaderParser
from pathlib import Path

from emailsync.local.stored_message import _FALLBACK_DATE_MS, _parse_date_ms, _received_date


def read_mbox(path: Path | str) -> list[bytes]:
    """Every entry of an mbox file as stored (minus its `From ` line): the raw messages, in file order."""
    box = std_mailbox.mbox(str(path), create=False)
    try:
        return [box.get_bytes(key, from_=False) for key in box.iterkeys()]
    finally:
        box.close()


def dated_entries(raws: Iterable[bytes], now_ms: int) -> list[tuple[bytes, email.message.Message, int]]:
    """(raw, headers, internalDate ms) per entry, in file order. The date is the Date header's, else the
    topmost Received header's; an entry with neither sits just after its dated neighbour in the file
    (deterministic), and a file without any valid date counts up from a fixed fallback date."""
    latest_plausible_ms = now_ms + 86_400_000
    parser = BytesHeaderParser()
    entries: list[tuple[bytes, email.message.Message, int]] = []
    previous_ms: int | None = None
    pending_fallback: list[int] = []  # indexes waiting for a later valid date
    for raw in raws:
        headers = parser.parsebytes(raw)
        millis = _parse_date_ms(headers.get("Date"), latest_plausible_ms)
        if millis is None:
            millis = _parse_date_ms(_received_date(headers), latest_plausible_ms)
        if millis is None:
            if previous_ms is None:
                pending_fallback.append(len(entries))
                entries.append((raw, headers, 0))
                continue
            millis = previous_ms + 1000  # deterministic: just after its neighbour in the file
        entries.append((raw, headers, millis))
        previous_ms = millis
        for index in pending_fallback:  # leading undated messages: just before the first dated one
            raw_p, headers_p, _ = entries[index]
            entries[index] = (raw_p, headers_p, millis - 1000 * (len(pending_fallback) - index))
        pending_fallback.clear()
    for index in pending_fallback:  # no valid date anywhere
        raw_p, headers_p, _ = entries[index]
        entries[index] = (raw_p, headers_p, _FALLBACK_DATE_MS + 1000 * index)
    return entries
