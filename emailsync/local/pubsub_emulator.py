"""Manage a local Google Cloud Pub/Sub emulator process (tests, the demo and benchmarks).

The emulator ships with the Google Cloud SDK (`google-cloud-cli-pubsub-emulator`, Java). It keeps
topics, subscriptions and messages in memory, so a restart starts empty. It is started in its own
process group on a free port and always stopped by whoever started it; `restart()` keeps the port,
so clients configured with `PUBSUB_EMULATOR_HOST` reconnect to the new process.
"""

from __future__ import annotations

import os
from pathlib import Path

from emailsync.local.processes import EmulatorProcess

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


class PubSubEmulator(EmulatorProcess):
    """A running emulator: `with PubSubEmulator() as emu: ...` or `start()` / `stop()` / `restart()`."""

    label = "Pub/Sub emulator"
    work_dir_prefix = "pubsub-emulator-"

    def _command(self) -> list[str]:
        # The launcher script starts a JVM: the process group takes both down on stop().
        return [str(find_pubsub_emulator()), "--host=127.0.0.1", f"--port={self.port}"]

    def restart(self, timeout: float = 60.0) -> PubSubEmulator:
        """Stop and start again on the same port; topics and subscriptions are gone afterwards."""
        self.stop()
        return self.start(timeout=timeout)

    def environ(self) -> dict[str, str]:
        """Environment variables that point google-cloud-pubsub clients (and child processes) here."""
        return {"PUBSUB_EMULATOR_HOST": self.host}
