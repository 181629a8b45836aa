"""Per-user coalescing of push syncs, driven by a sync that runs as long as the test says."""

from __future__ import annotations

import threading

from emailsync.push.coalesce import RunOutcome, SyncCoalescer


class HeldSync:
    """A sync that, once started, runs until `release()`; answers `outcomes` in turn (then DONE)."""

    def __init__(self, *outcomes: RunOutcome) -> None:
        self.outcomes = list(outcomes)
        self.started = threading.Semaphore(0)
        self.gate = threading.Event()
        self.calls: list[str] = []

    def __call__(self, provider_user_id: str) -> RunOutcome:
        self.calls.append(provider_user_id)
        self.started.release()
        self.gate.wait(10)
        return self.outcomes.pop(0) if self.outcomes else RunOutcome.DONE

    def release(self) -> None:
        self.gate.set()


def test_notifications_during_a_sync_collapse_into_exactly_one_follow_up():
    sync = HeldSync()
    coalescer = SyncCoalescer(sync)
    assert coalescer.notify("pu-a")
    assert sync.started.acquire(timeout=5)
    for _ in range(100):
        assert coalescer.notify("pu-a")  # acknowledged: queued behind the running sync
    sync.release()
    assert coalescer.wait_idle(10)
    coalescer.shutdown()
    assert sync.calls == ["pu-a", "pu-a"]
    assert coalescer.notifications("pu-a") == 101


def test_users_do_not_wait_for_each_other():
    sync = HeldSync()
    coalescer = SyncCoalescer(sync, max_workers=4)
    coalescer.notify("pu-a")
    coalescer.notify("pu-b")
    assert sync.started.acquire(timeout=5) and sync.started.acquire(timeout=5)
    sync.release()
    assert coalescer.wait_idle(10)
    coalescer.shutdown()
    assert sorted(sync.calls) == ["pu-a", "pu-b"]


def test_a_user_busy_with_another_sync_is_tried_again_not_dropped():
    sync = HeldSync(RunOutcome.BUSY, RunOutcome.DONE)
    sync.release()
    coalescer = SyncCoalescer(sync, busy_retry_seconds=0.05)
    coalescer.notify("pu-a")
    assert coalescer.wait_idle(10)
    coalescer.shutdown()
    assert sync.calls == ["pu-a", "pu-a"]
    assert coalescer.runs("pu-a") == 1  # the busy attempt did not run a sync


def test_a_stopped_coalescer_refuses_so_the_message_is_redelivered():
    coalescer = SyncCoalescer(HeldSync())
    coalescer.shutdown()
    assert not coalescer.notify("pu-a")
