"""The mirror's decisions (emailsync/sync/mirror.py): Gmail history and what Firestore holds in, the
operations on the stored emails out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emailsync.gmail.types import HistoryChange, HistoryChanges, HistoryPage
from emailsync.sync.mirror import (
    MAX_OPS_PER_BATCH,
    MirrorOps,
    MirrorStep,
    StoredState,
    history_steps,
    in_batches,
    reconcile_ops,
)


def change(
    kind: str, message_id: str, labels: list[str] | None = None, changed=(), record="10"
) -> HistoryChange:
    return HistoryChange(
        kind=kind,  # type: ignore[arg-type]
        message_id=message_id,
        history_id=record,
        label_ids=labels,
        changed_label_ids=list(changed),
    )


def one_page(*changes: HistoryChange, history_id: str = "99") -> HistoryChanges:
    return HistoryChanges(
        pages=[HistoryPage(changes=list(changes), history_id=history_id)], history_id=history_id
    )


def enriched(*labels: str, deleted: bool = False) -> StoredState:
    return StoredState(label_ids=list(labels), enriched=True, deleted=deleted)


def ops_of(changes: HistoryChanges, stored: dict[str, StoredState] | None = None) -> MirrorOps:
    merged = MirrorOps()
    for step in history_steps(changes, stored or {}):
        merged.add(step.ops)
    return merged


def test_a_label_change_updates_the_labels_from_the_record_without_a_download():
    ops = ops_of(
        one_page(change("labelRemoved", "m1", ["INBOX"], changed=["UNREAD"])),
        {"m1": enriched("INBOX", "UNREAD")},
    )
    assert ops == MirrorOps(set_labels={"m1": ["INBOX"]})


def test_label_deltas_without_the_message_labels_apply_to_the_stored_labels():
    ops = ops_of(
        one_page(
            change("labelAdded", "m1", changed=["STARRED"]),
            change("labelRemoved", "m1", changed=["UNREAD"]),
        ),
        {"m1": enriched("INBOX", "UNREAD")},
    )
    assert ops == MirrorOps(set_labels={"m1": ["INBOX", "STARRED"]})


def test_an_unchanged_net_effect_costs_nothing():
    ops = ops_of(
        one_page(
            change("labelAdded", "m1", ["INBOX", "STARRED"], changed=["STARRED"]),
            change("labelRemoved", "m1", ["INBOX"], changed=["STARRED"]),
        ),
        {"m1": enriched("INBOX")},
    )
    assert len(ops) == 0


def test_trash_and_spam_make_a_stored_message_leave_and_spam_additions_are_never_mirrored():
    ops = ops_of(
        one_page(
            change("labelAdded", "trashed", ["TRASH"], changed=["TRASH"]),
            change("labelAdded", "spammed", ["SPAM"], changed=["SPAM"]),
            change("messageAdded", "incoming-spam", ["SPAM", "UNREAD"]),
        ),
        {"trashed": enriched("INBOX"), "spammed": enriched("INBOX")},
    )
    assert ops == MirrorOps(leave={"trashed": ["TRASH"], "spammed": ["SPAM"]})


def test_an_untrashed_message_comes_back_from_its_tombstone_or_is_downloaded_again():
    untrash = one_page(
        change("labelRemoved", "tombstone", ["INBOX"], changed=["TRASH"]),
        change("labelRemoved", "removed", ["INBOX"], changed=["TRASH"]),
    )
    ops = ops_of(untrash, {"tombstone": enriched("TRASH", deleted=True)})
    assert ops == MirrorOps(set_labels={"tombstone": ["INBOX"]}, fetch=["removed"])


def test_a_message_added_then_deleted_is_never_downloaded_and_a_draft_autosave_keeps_only_the_last():
    ops = ops_of(
        one_page(
            change("messageAdded", "flash", ["INBOX"]),
            change("messageDeleted", "flash"),
            change("messageAdded", "draft-v2", ["DRAFT"]),
            change("messageDeleted", "draft-v1"),
        ),
        {"draft-v1": enriched("DRAFT")},
    )
    assert ops == MirrorOps(fetch=["draft-v2"], delete=["flash", "draft-v1"])


def test_a_rerun_over_history_already_applied_downloads_nothing_again():
    ops = ops_of(
        one_page(change("messageAdded", "m1", ["INBOX", "UNREAD"])), {"m1": enriched("UNREAD", "INBOX")}
    )
    assert len(ops) == 0


def test_each_message_lands_in_the_step_of_its_last_page_and_steps_checkpoint_their_page():
    pages = [
        HistoryPage(
            changes=[
                change("messageAdded", "a", ["INBOX"], record="11"),
                change("messageAdded", "b", ["INBOX"]),
            ],
            history_id="30",
            next_page_token="t",
            last_record_id="15",
        ),
        HistoryPage(changes=[change("labelAdded", "a", ["INBOX", "STARRED"], record="20")], history_id="30"),
    ]
    steps = history_steps(HistoryChanges(pages=pages, history_id="30"), {})
    assert [step.history_id for step in steps] == ["15", "30"]
    assert steps[0].ops == MirrorOps(fetch=["b"]) and steps[1].ops == MirrorOps(fetch=["a"])


def test_batches_cap_downloads_and_operations_and_only_a_steps_last_batch_moves_history():
    big = MirrorOps(
        fetch=[f"f{i}" for i in range(250)],
        set_labels={f"l{i}": ["INBOX"] for i in range(MAX_OPS_PER_BATCH + 100)},
    )
    batches = in_batches([MirrorStep(ops=big, history_id="7"), MirrorStep(history_id="8")], batch_size=100)
    assert [len(b.ops.fetch) for b in batches] == [100, 100, 50]
    assert sum(len(b.ops) for b in batches) == len(big)
    assert all(len(b.ops) <= MAX_OPS_PER_BATCH for b in batches)
    assert [b.history_id for b in batches] == [None, None, "7"]  # the empty step leaves no batch


def test_a_reconcile_removes_ghosts_downloads_only_missing_mail_and_fixes_labels():
    stored = {
        "same": enriched("INBOX"),
        "relabelled": enriched("INBOX", "UNREAD"),
        "ghost": enriched("INBOX"),
        "old-tombstone": enriched("TRASH", deleted=True),
        "back": enriched("TRASH", deleted=True),
        "half-stored": StoredState(label_ids=["INBOX"], enriched=False),
    }
    mailbox = {
        "same": ["INBOX"],
        "relabelled": ["INBOX"],
        "back": ["INBOX"],
        "half-stored": ["INBOX"],
        "new": [],
    }
    ops = reconcile_ops(mailbox, stored, trash_and_spam={"ghost", "old-tombstone"})
    assert ops == MirrorOps(
        fetch=["half-stored", "new"],
        set_labels={"relabelled": ["INBOX"], "back": ["INBOX"]},
        leave={"ghost": None},
    )


def test_a_reconcile_deletes_for_good_the_ghosts_that_are_not_in_the_trash_or_spam_either():
    stored = {
        "trashed": enriched("INBOX"),
        "deleted": enriched("INBOX"),
        "deleted-tombstone": enriched(deleted=True),
    }
    ops = reconcile_ops({}, stored, trash_and_spam={"trashed"})
    assert ops == MirrorOps(leave={"trashed": None}, delete=["deleted", "deleted-tombstone"])


def test_a_history_page_is_read_from_googles_json_shape():
    data = {
        "history": [
            {
                "id": "101",
                "messages": [{"id": "m1", "threadId": "t1"}],
                "messagesAdded": [
                    {"message": {"id": "m1", "threadId": "t1", "labelIds": ["INBOX", "UNREAD"]}}
                ],
            },
            {
                "id": "102",
                "messages": [{"id": "m1", "threadId": "t1"}],
                "labelsRemoved": [
                    {"message": {"id": "m1", "threadId": "t1", "labelIds": ["INBOX"]}, "labelIds": ["UNREAD"]}
                ],
            },
            {"id": "103", "messagesDeleted": [{"message": {"id": "m0", "threadId": "t0"}}]},
        ],
        "nextPageToken": "next",
        "historyId": "120",
    }
    page = HistoryPage.from_api(data, "100")
    assert [(c.kind, c.message_id, c.history_id) for c in page.changes] == [
        ("messageAdded", "m1", "101"),
        ("labelRemoved", "m1", "102"),
        ("messageDeleted", "m0", "103"),
    ]
    assert page.changes[1].label_ids == ["INBOX"] and page.changes[1].changed_label_ids == ["UNREAD"]
    assert page.changes[2].label_ids is None
    assert page.resume_history_id == "103"  # more pages follow: resume after its last record
    assert HistoryPage.from_api({"historyId": "120"}, "100").resume_history_id == "120"


def test_with_a_look_back_bound_a_reconcile_leaves_older_stored_mail_alone():
    since = datetime(2026, 11, 1, tzinfo=UTC)
    old_ms = int((since - timedelta(days=3)).timestamp() * 1000)
    new_ms = int((since + timedelta(days=3)).timestamp() * 1000)
    stored = {
        "older": StoredState(label_ids=["INBOX"], enriched=True, internal_date=old_ms),
        "ghost": StoredState(label_ids=["INBOX"], enriched=True, internal_date=new_ms),
    }
    assert reconcile_ops({}, stored, since=since, trash_and_spam={"ghost"}) == MirrorOps(
        leave={"ghost": None}
    )
