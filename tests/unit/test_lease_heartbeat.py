"""`LeaseHeartbeat`: renews on its own thread until stopped, notices a lost lease, and runs what it keeps
alive beside the lease in the context of whoever started it (an orchestrator's run and settings)."""

from __future__ import annotations

import contextvars
import subprocess
import time

from emailsync.sync.lease import LeaseHeartbeat, holder_identity, holder_is_gone

current_run: contextvars.ContextVar[str] = contextvars.ContextVar("current_run", default="none")


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_heartbeat_renews_until_stopped_and_keeps_its_companions_alive_in_the_starters_context():
    renewals: list[float] = []
    seen_runs: list[str] = []
    heartbeat = LeaseHeartbeat(lambda: renewals.append(time.monotonic()) or True, 0.05)
    heartbeat.also(lambda: seen_runs.append(current_run.get()))
    token = current_run.set("flow-run-1")
    try:
        heartbeat.start()
    finally:
        current_run.reset(token)

    assert wait_until(lambda: len(renewals) >= 3 and len(seen_runs) >= 3)
    heartbeat.stop()
    count = len(renewals)
    time.sleep(0.2)
    assert len(renewals) == count and not heartbeat.running and not heartbeat.lost.is_set()
    assert set(seen_runs) == {"flow-run-1"}


def test_a_lease_no_longer_ours_stops_the_heartbeat_and_says_so():
    heartbeat = LeaseHeartbeat(lambda: False, 0.02).start()
    assert heartbeat.lost.wait(5)
    assert wait_until(lambda: not heartbeat.running)


def test_a_failing_renewal_is_retried_on_the_next_beat():
    attempts: list[int] = []

    def renew() -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("Firestore hiccup")
        return True

    heartbeat = LeaseHeartbeat(renew, 0.02).start()
    assert wait_until(lambda: len(attempts) >= 3)
    heartbeat.stop()
    assert not heartbeat.lost.is_set()


def test_only_a_process_of_this_machine_that_is_gone_counts_as_gone():
    assert not holder_is_gone(holder_identity())
    assert not holder_is_gone(None) and not holder_is_gone("another-machine:pidns/123/456")
    child = subprocess.Popen(["sleep", "30"])
    identity = holder_identity(child.pid)
    assert identity is not None and not holder_is_gone(identity)
    child.kill()
    child.wait()
    assert holder_is_gone(identity)
