"""`emailsync serve`: the deployments and the watcher in one process, for local use.

`prefect.serve` registers `email-sync` (on demand), `periodic-email-sync` (hourly sweep) and
`renew-gmail-watches` with the Prefect API and executes their runs in this process; the Gmail-connect
watcher runs beside it on a thread and starts connect syncs as runs of the `email-sync` deployment, and
with `EMAILSYNC_GMAIL_PUSH_TOPIC` set the Gmail push listener (deployments/push.py) does the same for
every notification. Production uses
prefect.yaml and a work pool instead (see README, "Production"); both follow the one definition in
`emailsync/deployment_specs.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from emailsync.config import PREFECT_OFFLINE_ENVIRONMENT
from emailsync.deployment_specs import DEPLOYMENTS, EMAIL_SYNC, PERIODIC_EMAIL_SYNC, RENEW_GMAIL_WATCHES
from emailsync.local.processes import free_port, stop_process_group

logger = logging.getLogger("emailsync.serve")


def serve(with_watcher: bool = True, limit: int | None = 8) -> None:
    """Serve until interrupted. `limit` caps concurrent flow runs in this process."""
    from prefect import serve as prefect_serve

    from deployments.automations import install_automations
    from deployments.push import PushService
    from deployments.watcher import DeploymentLauncher, GmailConnectWatcher
    from flows.email_sync import email_sync
    from flows.periodic_sync import periodic_email_sync
    from flows.renew_watches import renew_gmail_watches

    flows = {
        EMAIL_SYNC.name: email_sync,
        PERIODIC_EMAIL_SYNC.name: periodic_email_sync,
        RENEW_GMAIL_WATCHES.name: renew_gmail_watches,
    }
    deployments = [
        flows[spec.name].to_deployment(
            name=spec.name,
            tags=list(spec.tags),
            description=spec.description,
            parameters=dict(spec.parameters),
            cron=spec.cron,
            concurrency_limit=spec.concurrency_limit,
            version=spec.version,
        )
        for spec in DEPLOYMENTS
    ]
    try:  # operators hear of failed or crashed syncs (deployments/automations.py)
        install_automations()
    except Exception as exc:
        logger.warning("could not install the Prefect automation: %s", exc)
    watcher = push = None
    if with_watcher:
        # Register the deployments before the watcher's catch-up can ask for runs of them; the runs
        # then wait in the API until prefect.serve below picks them up.
        for deployment in deployments:
            deployment.apply()
        # None unless EMAILSYNC_GMAIL_PUSH_TOPIC is set; its syncs are runs of the served deployment.
        push = PushService.from_settings(via_deployment=True)
        on_decision = push.on_watcher_decision if push is not None else None
        watcher = GmailConnectWatcher(launcher=DeploymentLauncher(), on_decision=on_decision).start()
        if push is not None:
            push.start()
    try:
        prefect_serve(
            *deployments,
            limit=limit,
            # Look for new runs every 2 s (default 10): a connect's sync should start promptly.
            query_seconds=2,
        )
    finally:
        if push is not None:
            push.stop()
        if watcher is not None:
            watcher.stop(wait=False)


if __name__ == "__main__":
    serve()


class PrefectServerProcess:
    """A real `prefect server start` (sqlite under `home`) plus helpers to run the Prefect CLI and
    process workers against it. For integration tests, benchmarks and trying the production path
    on one machine; everything runs in its own process group and `stop()` ends it."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = Path(home)
        self.port = port or free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self._server: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._prefect = str(Path(sys.executable).with_name("prefect"))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for anything that talks to this server (CLI, workers, their flow runs)."""
        return {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            **PREFECT_OFFLINE_ENVIRONMENT,
            "PREFECT_UI_ENABLED": "false",
            # Workers look for due runs every second instead of every 10 (latency, not load, matters here).
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            **(extra or {}),
        }

    def start(self, timeout: float = 90.0) -> PrefectServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("wb")
        self._server = subprocess.Popen(
            [self._prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"prefect server exited early:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"prefect server not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30, name: str = "server.log") -> str:
        path = self.home / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def cli(self, *args: str, cwd: Path | None = None, extra_env: dict[str, str] | None = None) -> str:
        """Run `prefect --no-prompt ARGS` against this server; raises with the output on failure."""
        result = subprocess.run(
            [self._prefect, "--no-prompt", *args],
            env=self.env(extra_env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start_worker(
        self, pool: str, name: str, extra_env: dict[str, str] | None = None, limit: int | None = None
    ) -> None:
        """A `prefect worker start --type process` subprocess (at most `limit` concurrent flow runs);
        its flow runs inherit `extra_env`. Its log is `worker-{name}.log` under `home`."""
        log = (self.home / f"worker-{name}.log").open("wb")
        command = [self._prefect, "worker", "start", "--pool", pool, "--type", "process", "--name", name]
        if limit is not None:
            command += ["--limit", str(limit)]
        self._workers.append(
            subprocess.Popen(
                command,
                env=self.env(extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def stop(self) -> None:
        processes = [*self._workers, *([self._server] if self._server else [])]
        self._workers, self._server = [], None
        for process in processes:  # workers first: they would otherwise report a dead API
            stop_process_group(process, timeout=15.0)

    def __enter__(self) -> PrefectServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
