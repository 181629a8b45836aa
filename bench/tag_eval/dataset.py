"""The labelled tag evaluation set: bench/tag_eval/labels.csv over ../shared/corpus/spamassassin-dev.mbox.

`python -m bench.tag_eval.dataset` rebuilds labels.csv from the mbox (how labels are decided: README.md
in this folder). `load()` joins the committed labels with the messages; without the corpus it returns
None, so the bench skips and no test needs ../shared.
"""

from __future__ import annotations

import csv
import mailbox
import os
import re
from dataclasses import dataclass
from pathlib import Path

from emailsync.enrichment import EnrichmentInput

HERE = Path(__file__).resolve().parent
LABELS_CSV = HERE / "labels.csv"
CORPUS_MBOX = (
    Path(os.environ.get("EMAILSYNC_BENCH_CORPUS") or HERE.parents[1].parent / "shared" / "corpus")
    / "spamassassin-dev.mbox"
)
# The mbox concatenates SpamAssassin public-corpus folders in order: easy ham, hard ham, spam.
HARD_HAM_START = 600
SPAM_START = 725
# Senders in the easy-ham block whose messages are publisher digests, not list discussion.
DIGEST_SENDERS = re.compile(r"pudge@perl\.org|tips@spesh\.com|mediaunspun", re.IGNORECASE)
LIST_HEADERS = ("List-Id", "List-Post", "List-Unsubscribe", "Mailing-List")
FIELDS = ("index", "message_id", "spam", "newsletter", "mailing_list", "split", "subject")


@dataclass(frozen=True)
class Example:
    index: int
    message_id: str
    spam: bool
    newsletter: bool
    mailing_list: bool
    split: str  # "train" or "test": held-out figures are on "test" only
    item: EnrichmentInput | None = None


def _split(index: int) -> str:
    return "test" if index % 3 == 0 else "train"


def build_labels(mbox_path: Path = CORPUS_MBOX) -> list[dict[str, object]]:
    rows = []
    for index, message in enumerate(mailbox.mbox(mbox_path)):
        sender = f"{message.get_from() or ''} {message.get('From', '')}"
        spam = index >= SPAM_START
        mailing_list = any(message.get(h) for h in LIST_HEADERS) or "sentto-" in sender
        newsletter = not spam and (index >= HARD_HAM_START or bool(DIGEST_SENDERS.search(sender)))
        rows.append(
            {
                "index": index,
                "message_id": str(message.get("Message-Id", "")).strip(),
                "spam": int(spam),
                "newsletter": int(newsletter),
                "mailing_list": int(mailing_list),
                "split": _split(index),
                "subject": " ".join(str(message.get("Subject", "")).split())[:80],
            }
        )
    return rows


def write_labels(rows: list[dict[str, object]], path: Path = LABELS_CSV) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def load(mbox_path: Path = CORPUS_MBOX) -> list[Example] | None:
    """Every labelled example with its parsed message, or None when the corpus is not here."""
    if not mbox_path.is_file():
        return None
    from emailsync.gmail.mime import parse_message

    with LABELS_CSV.open(newline="") as handle:
        labels = {int(row["index"]): row for row in csv.DictReader(handle)}
    examples = []
    for index, message in enumerate(mailbox.mbox(mbox_path)):
        row = labels.get(index)
        if row is None:
            continue
        parsed = parse_message(message.as_bytes(), message_id=f"sa-{index:04d}")
        examples.append(
            Example(
                index=index,
                message_id=row["message_id"],
                spam=row["spam"] == "1",
                newsletter=row["newsletter"] == "1",
                mailing_list=row["mailing_list"] == "1",
                split=row["split"],
                item=EnrichmentInput.from_email(parsed),
            )
        )
    return examples


if __name__ == "__main__":
    rows = build_labels()
    write_labels(rows)
    print(f"wrote {len(rows)} labels to {LABELS_CSV}")
