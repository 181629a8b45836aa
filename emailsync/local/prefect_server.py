"""One local Prefect server for every CLI command of this machine (when `PREFECT_API_URL` is unset).

Without it each `emailsync sync` would start its own temporary Prefect server: ten at once on a small
machine time out, and a killed process's concurrency slot lives on in a server nobody can reach. Here
the first command that needs Prefect starts a detached supervisor, which starts `prefect server start`
on a free port and writes the port file; later commands find it there. Under the state directory
(`$EMAILSYNC_STATE_DIR/prefect`, default `~/.cache/emailsync/prefect`):

    server.lock   flock: one command at a time starts, finds or stops the server
    server.json   api_url, port, supervisor pid (present while the server answers)
    clients/PID   one file per command using the server (removed at its exit; a killed one is noticed)
    home/         PREFECT_HOME: the server's database, so run history survives restarts
    server.log    the supervisor's and the server's output

The supervisor stops the server once no client has been alive for the idle time
(`EMAILSYNC_PREFECT_SERVER_IDLE_MINUTES`), or on `emailsync prefect-server stop`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from pydantic import BaseModel

from emailsync.config import PREFECT_OFFLINE_ENVIRONMENT, Settings, get_settings
from emailsync.local.processes import free_port, stop_process_group
from emailsync.sync.lease import holder_identity, holder_is_gone

SERVER_START_TIMEOUT_SECONDS = 180.0
SUPERVISOR_POLL_SECONDS = 2.0


class ServerInfo(BaseModel):
    api_url: str
    port: int
    supervisor_pid: int


def default_state_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    base = Path(settings.state_dir) if settings.state_dir else Path.home() / ".cache" / "emailsync"
    return base / "prefect"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


class SharedPrefectServer:
    """The machine's shared local Prefect server, seen from a CLI command (`ensure`, `stop`, `info`)."""

    def __init__(self, state_dir: Path | None = None, idle_seconds: float | None = None) -> None:
        settings = get_settings()
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(settings)
        self.idle_seconds = (
            idle_seconds if idle_seconds is not None else settings.prefect_server_idle_minutes * 60
        )
        self.lock_path = self.state_dir / "server.lock"
        self.info_path = self.state_dir / "server.json"
        self.clients_dir = self.state_dir / "clients"
        self.home = self.state_dir / "home"
        self.log_path = self.state_dir / "server.log"

    # ------------------------------------------------------------------------------ commands' side

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.clients_dir.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def info(self) -> ServerInfo | None:
        """The running server (it answers), else None."""
        try:
            info = ServerInfo.model_validate_json(self.info_path.read_text())
        except (OSError, ValueError):
            return None
        return info if healthy(info.api_url) else None

    def ensure(self, *, register: bool = True) -> str:
        """The API URL of the shared server, started if needed; this process counts as its client
        until it exits (unless `register` is false)."""
        with self.locked():
            info = self.info()
            if info is None:
                info = self._start()
            if register:
                self._register(os.getpid())
            return info.api_url

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server (whatever its clients); false when none was running."""
        with self.locked():
            try:
                info = ServerInfo.model_validate_json(self.info_path.read_text())
            except (OSError, ValueError):
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.supervisor_pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(info.supervisor_pid):
                time.sleep(0.2)
            self.info_path.unlink(missing_ok=True)
            return True

    def _start(self) -> ServerInfo:
        self.info_path.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        supervisor = subprocess.Popen(
            [sys.executable, "-m", __name__, "supervise", str(self.state_dir), str(self.idle_seconds)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command, and a Ctrl-C of it
            env={**os.environ, **PREFECT_OFFLINE_ENVIRONMENT},
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            info = self.info()
            if info is not None:
                return info
            if supervisor.poll() is not None:
                raise RuntimeError(f"the local Prefect server did not start (see {self.log_path})")
            time.sleep(0.25)
        stop_process_group(supervisor)  # type: ignore[arg-type]
        raise TimeoutError(f"the local Prefect server did not start in time (see {self.log_path})")

    def _register(self, pid: int) -> None:
        client = self.clients_dir / str(pid)
        client.write_text(holder_identity(pid) or "")
        atexit.register(client.unlink, missing_ok=True)

    def live_clients(self) -> int:
        """Commands using the server now; files of commands that are gone are removed."""
        count = 0
        for client in self.clients_dir.glob("*"):
            identity = client.read_text().strip() if client.exists() else ""
            if (identity and holder_is_gone(identity)) or (not identity and not _alive(int(client.name))):
                client.unlink(missing_ok=True)
            else:
                count += 1
        return count

    # ------------------------------------------------------------------------------ the supervisor

    def supervise(self) -> int:
        """Run the server until it has had no client for the idle time, or until SIGTERM."""
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        self.home.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        prefect = str(Path(sys.executable).with_name("prefect"))
        server = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env={**environment, "PREFECT_HOME": str(self.home), **PREFECT_OFFLINE_ENVIRONMENT},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        stopping = False

        def on_term(_signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        try:
            while not healthy(api_url):
                if server.poll() is not None or stopping:
                    return 1
                time.sleep(0.25)
            free_orphaned_slots(api_url)
            info = ServerInfo(api_url=api_url, port=port, supervisor_pid=os.getpid())
            temporary = self.info_path.with_suffix(".tmp")
            temporary.write_text(info.model_dump_json())
            temporary.replace(self.info_path)
            print(f"local Prefect server at {api_url}", flush=True)
            last_client = time.monotonic()
            while not stopping and server.poll() is None:
                time.sleep(SUPERVISOR_POLL_SECONDS)
                if self.live_clients():
                    last_client = time.monotonic()
                elif time.monotonic() - last_client > self.idle_seconds:
                    with self.locked():  # no command may find the server while it is being stopped
                        if not self.live_clients():
                            self.info_path.unlink(missing_ok=True)
                            print("idle: stopping the local Prefect server", flush=True)
                            break
            return 0
        finally:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.info_path.read_text()).get("supervisor_pid") == os.getpid():
                    self.info_path.unlink(missing_ok=True)
            stop_process_group(server, timeout=15)  # type: ignore[arg-type]


def free_orphaned_slots(api_url: str, attempts: int = 10) -> None:
    """Zero the occupied slots of every concurrency limit of a server that just started.

    The server keeps slot leases in memory but slot counts in its database: slots held when it last
    stopped would stay occupied for good, with no lease left to expire. At start nobody holds any.
    """
    for attempt in range(attempts):
        try:
            response = requests.post(f"{api_url}/v2/concurrency_limits/filter", json={}, timeout=10)
            response.raise_for_status()
            for limit in response.json():
                if limit.get("active_slots"):
                    requests.patch(
                        f"{api_url}/v2/concurrency_limits/{limit['id']}", json={"active_slots": 0}, timeout=10
                    ).raise_for_status()
                    print(f"freed the orphaned slots of {limit['name']}", flush=True)
            return
        except requests.RequestException as exc:  # a busy SQLite answers 503: try again
            if attempt == attempts - 1:
                print(f"could not free orphaned concurrency slots: {exc}", flush=True)
            time.sleep(1.0)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # our own child: reap it if it has exited
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("command", choices=["supervise"])
    parser.add_argument("state_dir")
    parser.add_argument("idle_seconds", type=float)
    args = parser.parse_args(argv)
    return SharedPrefectServer(Path(args.state_dir), args.idle_seconds).supervise()


if __name__ == "__main__":
    sys.exit(main())
