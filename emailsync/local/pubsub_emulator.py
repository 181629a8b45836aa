"""Manage a local Google Cloud Pub/Sub emulator process (tests, the demo and benchmarks).

The emulator ships with the Google Cloud SDK (`google-cloud-cli-pubsub-emulator`, Java). It keeps
topics, subscriptions and messages in memory, so a restart starts empty. It is started in its own
process group on a free port and always stopped by whoever started it; `restart()` keeps the port,
so clients configured with `PUBSUB_EMULATOR_HOST` reconnect to the new process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from emailsync.local.processes import free_port, stop_process_group

EMULATOR_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)


class PubSubEmulatorNotFoundError(RuntimeError):
    pass


def find_pubsub_emulator() -> Path:
    explicit = os.environ.get("PUBSUB_EMULATOR_BIN")
    for candidate in ([explicit] if explicit else []) + list(EMULATOR_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise PubSubEmulatorNotFoundError(
        "Pub/Sub emulator not found. Install it with `apt-get install google-cloud-cli-pubsub-emulator` "
        "(Google Cloud apt repository) or set PUBSUB_EMULATOR_BIN to bin/cloud-pubsub-emulator."
    )


class PubSubEmulator:
    """A running emulator: `with PubSubEmulator() as emu: ...` or `start()` / `stop()` / `restart()`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._session = requests.Session()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> PubSubEmulator:
        executable = find_pubsub_emulator()
        # Lives as long as the emulator process; closed (and deleted) by stop().
        self._log_file = tempfile.NamedTemporaryFile(prefix="pubsub-emulator-", suffix=".log")  # noqa: SIM115
        self._process = subprocess.Popen(
            [str(executable), "--host=127.0.0.1", f"--port={self.port}"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() kills the launcher script and its JVM
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(f"Pub/Sub emulator exited early:\n{log}")
            with contextlib.suppress(requests.RequestException):
                if self._session.get(self.base_url + "/", timeout=1).text.strip() == "Ok":
                    return self
            time.sleep(0.1)
        log = self.log_tail()
        self.stop()
        raise TimeoutError(f"Pub/Sub emulator not ready after {timeout}s:\n{log}")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process_group(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, timeout: float = 60.0) -> PubSubEmulator:
        """Stop and start again on the same port; topics and subscriptions are gone afterwards."""
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self._log_file is None:
            return ""
        try:
            return "\n".join(Path(self._log_file.name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def environ(self) -> dict[str, str]:
        """Environment variables that point google-cloud-pubsub clients (and child processes) here."""
        return {"PUBSUB_EMULATOR_HOST": self.host}
