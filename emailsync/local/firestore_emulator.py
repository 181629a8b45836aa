"""Manage a local Google Firestore emulator process (tests, the demo and benchmarks).

The emulator comes from the Debian package `google-cloud-cli-firestore-emulator` (Java 17).
It is started in its own process group on a free port and always stopped by whoever started it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from emailsync.local.processes import EmulatorProcess

EMULATOR_JAR_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
    "/usr/share/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
)
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"


class EmulatorNotFoundError(RuntimeError):
    pass


def find_emulator_jar() -> Path:
    explicit = os.environ.get("FIRESTORE_EMULATOR_JAR")
    for candidate in ([explicit] if explicit else []) + list(EMULATOR_JAR_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise EmulatorNotFoundError(
        "Firestore emulator not found. Install it with "
        "`apt-get install google-cloud-cli-firestore-emulator openjdk-17-jre-headless` "
        "(Google Cloud apt repository) or set FIRESTORE_EMULATOR_JAR to cloud-firestore-emulator.jar."
    )


class FirestoreEmulator(EmulatorProcess):
    """A running emulator: `with FirestoreEmulator() as emu: ...` or `start()` / `stop()`."""

    label = "Firestore emulator"
    work_dir_prefix = "firestore-emulator-"

    def __init__(self, port: int | None = None, rules_path: Path | str | None = None) -> None:
        super().__init__(port)
        self.rules_path = Path(rules_path) if rules_path else None

    # ----------------------------------------------------------------------------- lifecycle

    def _command(self) -> list[str]:
        java = shutil.which("java")
        if not java:
            raise EmulatorNotFoundError("java (17+) is needed for the Firestore emulator")
        jar = find_emulator_jar()
        return [java, "-cp", str(jar), MAIN_CLASS, "start", "--host=127.0.0.1", f"--port={self.port}"]

    def start(self, timeout: float = 60.0) -> FirestoreEmulator:
        super().start(timeout)
        if self.rules_path:
            try:
                self.load_rules(self.rules_path)
            except BaseException:  # e.g. a syntax error in the rules: never leave the JVM behind
                self.stop()
                raise
        return self

    # ----------------------------------------------------------------------------- admin calls

    def load_rules(self, rules: Path | str, project: str = "omnibutler-local") -> None:
        """Load security rules (a path or the rules text) for `project`.

        Rules are per project: a project the emulator never got rules for is wide open, so load them
        for every project whose rules matter (`start()` loads `rules_path` for "omnibutler-local").
        """
        # Rules text always spans lines; a path never does (and a long text is no valid file name).
        is_path = isinstance(rules, Path) or ("\n" not in rules and Path(rules).is_file())
        text = Path(rules).read_text() if is_path else str(rules)
        body = {"rules": {"files": [{"name": "firestore.rules", "content": text}]}}
        # The first rules load compiles them in a cold JVM: on a busy machine that takes well over 10 s.
        response = self._session.put(
            f"{self.base_url}/emulator/v1/projects/{project}:securityRules", json=body, timeout=60
        )
        if response.status_code != 200:
            raise RuntimeError(f"loading rules failed ({response.status_code}): {response.text}")

    def clear(self, project: str = "omnibutler-local") -> None:
        """Delete every document of `project`."""
        response = self._session.delete(
            f"{self.base_url}/emulator/v1/projects/{project}/databases/(default)/documents", timeout=30
        )
        response.raise_for_status()

    def environ(self, project: str = "omnibutler-local") -> dict[str, str]:
        """Environment variables that point clients (and child processes) at this emulator."""
        return {"FIRESTORE_EMULATOR_HOST": self.host, "GOOGLE_CLOUD_PROJECT": project}
