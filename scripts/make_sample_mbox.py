"""Build samples/sample.mbox (committed) from ../shared/corpus: every CPython edge case plus
an evenly spread slice of the SpamAssassin corpus, so a fresh clone has real mail to sync."""

from __future__ import annotations

import mailbox
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
OUT = Path(__file__).resolve().parents[1] / "samples" / "sample.mbox"
SPAMASSASSIN_COUNT = 252


def main() -> None:
    # Raw bytes, From_ lines included: re-serialising would "repair" the very defects we test on.
    cpython = _raw_entries(CORPUS / "cpython-test-email.mbox")
    spam = _raw_entries(CORPUS / "spamassassin-dev.mbox")
    step = len(spam) / SPAMASSASSIN_COUNT
    chosen = [spam[int(i * step)] for i in range(SPAMASSASSIN_COUNT)]
    OUT.write_bytes(b"".join(cpython + chosen))
    print(f"wrote {len(cpython) + len(chosen)} messages to {OUT}", file=sys.stderr)


def _raw_entries(path: Path) -> list[bytes]:
    box = mailbox.mbox(path, create=False)
    entries = []
    for key in box.iterkeys():
        entry = box.get_bytes(key, from_=True)  # the entry as stored, From_ line included
        entries.append(entry if entry.endswith(b"\n\n") else entry.rstrip(b"\n") + b"\n\n")
    box.close()
    return entries


if __name__ == "__main__":
    main()
