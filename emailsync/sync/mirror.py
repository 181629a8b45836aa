"""The mirror's decisions: what each Gmail change (or a reconcile's listing) does to the stored emails.

`providerUsers/{id}/emails` holds exactly the messages `messages.list` returns by default (no SPAM, no
TRASH; drafts included), each with Gmail's labelIds. Everything here is pure: Gmail history (or a
listing) and what Firestore holds for the touched ids in, `MirrorOps` out; the session applies them.

- History is folded per message in history order (`fold_history`): the last record that gives the
  message's labels wins, label deltas of records without them are applied on top, a deletion is final.
- `decide` turns one folded message and its stored state into one operation: download it (new, or back
  without a stored enrichment), set its labels (a label change, or a tombstone restored: no download,
  no enrichment), let it leave (trash, spam: its enrichment is kept), delete it (gone for good).
- Steps follow history pages: a message lands in the step of the page holding its last change, and a
  step's `history_id` is where history resumes once it (and every step before it) is applied, so
  `lastHistoryId` only moves past changes that are in Firestore.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from emailsync.gmail.types import HistoryChange, HistoryChanges

# Messages with one of these labels are not in `messages.list`'s default answer: not in the mirror.
EXCLUDED_LABELS = frozenset({"SPAM", "TRASH"})
# Stored-email operations per batch at most (label updates are cheap; downloads are capped by batch size).
MAX_OPS_PER_BATCH = 500


def is_mirrored(label_ids: Iterable[str]) -> bool:
    return not EXCLUDED_LABELS.intersection(label_ids)


class StoredState(BaseModel):
    """What Firestore holds for one message id (the fields the mirror compares)."""

    label_ids: list[str] = Field(default_factory=list)
    enriched: bool = False
    deleted: bool = False  # a tombstone (`deletedAt` set): not part of the mirror
    internal_date: int | None = None  # epoch milliseconds


class MirrorOps(BaseModel):
    """What to do to the stored emails; every message id appears in one operation at most."""

    fetch: list[str] = Field(default_factory=list)  # download, parse, enrich (once), store
    set_labels: dict[str, list[str]] = Field(default_factory=dict)  # kept (a tombstone is restored)
    leave: dict[str, list[str] | None] = Field(default_factory=dict)  # trash / spam / gone from the listing
    delete: list[str] = Field(default_factory=list)  # deleted in Gmail for good

    @property
    def ids(self) -> list[str]:
        return [*self.fetch, *self.set_labels, *self.leave, *self.delete]

    def __len__(self) -> int:
        return len(self.fetch) + len(self.set_labels) + len(self.leave) + len(self.delete)

    def add(self, other: MirrorOps) -> None:
        self.fetch.extend(other.fetch)
        self.set_labels.update(other.set_labels)
        self.leave.update(other.leave)
        self.delete.extend(other.delete)


class MirrorStep(BaseModel):
    """Operations applied together; afterwards history resumes at `history_id` (None: no checkpoint)."""

    ops: MirrorOps = Field(default_factory=MirrorOps)
    history_id: str | None = None


class FoldedMessage(BaseModel):
    """The net effect of one page range of history on one message."""

    message_id: str
    added: bool = False
    deleted: bool = False
    label_ids: list[str] | None = None  # known labels after the last change (None: only deltas known)
    labels_added: list[str] = Field(default_factory=list)
    labels_removed: list[str] = Field(default_factory=list)
    page: int = 0  # the page of its last change

    def apply(self, change: HistoryChange, page: int) -> None:
        self.page = page
        if change.kind == "messageDeleted":
            self.deleted = True
            return
        if change.kind == "messageAdded":
            self.added, self.deleted = True, False
        if change.label_ids is not None:
            self.label_ids = list(change.label_ids)
            self.labels_added, self.labels_removed = [], []
        elif change.kind in ("labelAdded", "labelRemoved"):
            self._apply_delta(change.kind == "labelAdded", change.changed_label_ids)

    def _apply_delta(self, adding: bool, labels: Sequence[str]) -> None:
        if self.label_ids is not None:
            self.label_ids = _with_delta(self.label_ids, labels if adding else (), () if adding else labels)
            return
        gain, lose = (
            (self.labels_added, self.labels_removed) if adding else (self.labels_removed, self.labels_added)
        )
        for label in labels:
            if label in lose:
                lose.remove(label)
            if label not in gain:
                gain.append(label)

    def labels_on(self, stored: StoredState | None) -> list[str] | None:
        """The message's labels now: known from history, or the stored ones with history's deltas."""
        if self.label_ids is not None:
            return self.label_ids
        if stored is None or self.added:
            return None
        return _with_delta(stored.label_ids, self.labels_added, self.labels_removed)


def _with_delta(labels: Sequence[str], added: Iterable[str], removed: Iterable[str]) -> list[str]:
    removed_set = set(removed)
    result = [label for label in labels if label not in removed_set]
    result.extend(label for label in added if label not in result)
    return result


def fold_history(changes: HistoryChanges) -> dict[str, FoldedMessage]:
    """Every touched message's net change, in history order (dict order = first touch)."""
    folded: dict[str, FoldedMessage] = {}
    for page_number, page in enumerate(changes.pages):
        for change in page.changes:
            message = folded.setdefault(change.message_id, FoldedMessage(message_id=change.message_id))
            message.apply(change, page_number)
    return folded


def decide(message: FoldedMessage, stored: StoredState | None) -> MirrorOps:
    """The one operation (or none) that brings the stored email to what history says."""
    ops = MirrorOps()
    message_id = message.message_id
    if message.deleted:
        ops.delete.append(message_id)  # also drops an enrichment kept aside while it was in the trash
        return ops
    labels = message.labels_on(stored)
    if labels is not None and not is_mirrored(labels):
        if stored is not None and not stored.deleted:
            ops.leave[message_id] = labels
        return ops  # SPAM additions, and changes to messages already out, are not mirrored
    if stored is not None and stored.enriched and labels is not None:
        if stored.deleted or sorted(labels) != sorted(stored.label_ids):
            ops.set_labels[message_id] = labels
        return ops
    ops.fetch.append(message_id)  # new, or back without a stored enrichment, or labels unknown
    return ops


def history_steps(changes: HistoryChanges, stored: Mapping[str, StoredState]) -> list[MirrorStep]:
    """One step per history page: the messages whose last change is on that page."""
    steps = [MirrorStep(history_id=page.resume_history_id) for page in changes.pages]
    for message in fold_history(changes).values():
        steps[message.page].ops.add(decide(message, stored.get(message.message_id)))
    return steps


def reconcile_ops(
    mailbox: Mapping[str, list[str]],
    stored: Mapping[str, StoredState],
    *,
    since: datetime | None = None,
    trash_and_spam: set[str] | frozenset[str] = frozenset(),
) -> MirrorOps:
    """After history expired: `mailbox` is every mirrored message id with its labels (a fresh listing,
    of the mail `since` a look-back bound when there is one). Ghosts leave (those in `trash_and_spam`
    may come back; the others were deleted for good), missing messages are downloaded (or restored),
    labels are fixed; the rest is untouched."""
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    ops = MirrorOps()
    for message_id, labels in mailbox.items():
        state = stored.get(message_id)
        folded = FoldedMessage(message_id=message_id, label_ids=labels)
        ops.add(decide(folded, state))
    for message_id, state in stored.items():
        older = since_ms is not None and state.internal_date is not None and state.internal_date < since_ms
        if message_id in mailbox or older:
            continue
        if message_id in trash_and_spam:
            if not state.deleted:
                ops.leave[message_id] = None
        else:
            ops.delete.append(message_id)  # deleted for good: its tombstone or kept enrichment goes too
    return ops


def in_batches(steps: Sequence[MirrorStep], batch_size: int) -> list[MirrorStep]:
    """Each step cut into batches of at most `batch_size` downloads and `MAX_OPS_PER_BATCH` operations;
    only a step's last batch carries its history checkpoint. Steps with nothing to do are dropped (the
    sync's completion moves history past them)."""
    batches: list[MirrorStep] = []
    for step in steps:
        ops = step.ops
        fetch = [("fetch", message_id) for message_id in ops.fetch]
        others = [
            *(("set_labels", message_id) for message_id in ops.set_labels),
            *(("leave", message_id) for message_id in ops.leave),
            *(("delete", message_id) for message_id in ops.delete),
        ]
        current: list[MirrorStep] = []
        while fetch or others:
            batch = MirrorStep()
            take_fetch, fetch = fetch[:batch_size], fetch[batch_size:]
            room = MAX_OPS_PER_BATCH - len(take_fetch)
            take_others, others = others[:room], others[room:]
            for kind, message_id in [*take_fetch, *take_others]:
                if kind == "fetch":
                    batch.ops.fetch.append(message_id)
                elif kind == "set_labels":
                    batch.ops.set_labels[message_id] = ops.set_labels[message_id]
                elif kind == "leave":
                    batch.ops.leave[message_id] = ops.leave[message_id]
                else:
                    batch.ops.delete.append(message_id)
            current.append(batch)
        if current:
            current[-1].history_id = step.history_id
        batches.extend(current)
    return batches
