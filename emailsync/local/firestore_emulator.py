"""Manage a local Google Firestore emulator process (tests, the demo and benchmarks).

The emulator comes from the Debian package `google-cloud-cli-firestore-emulator` (Java 17).
It is started in its own process group on a free port and always stopped by whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from emailsync.local.processes import free_port, stop_process_group

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


class FirestoreEmulator:
    """A running emulator: `with FirestoreEmulator() as emu: ...` or `start()` / `stop()`."""

    def __init__(self, port: int | None = None, rules_path: Path | str | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.rules_path = Path(rules_path) if rules_path else None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._session = requests.Session()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 60.0) -> FirestoreEmulator:
        java = shutil.which("java")
        if not java:
            raise EmulatorNotFoundError("java (17+) is needed for the Firestore emulator")
        jar = find_emulator_jar()
        # Lives as long as the emulator process; closed (and deleted) by stop().
        self._log_file = tempfile.NamedTemporaryFile(prefix="firestore-emulator-", suffix=".log")  # noqa: SIM115
        self._process = subprocess.Popen(
            [java, "-cp", str(jar), MAIN_CLASS, "start", "--host=127.0.0.1", f"--port={self.port}"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() kills the JVM and anything it forks
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Firestore emulator exited early:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if self._session.get(self.base_url + "/", timeout=1).text.strip() == "Ok":
                    break
            time.sleep(0.1)
        else:
            self.stop()
            raise TimeoutError(f"Firestore emulator not ready after {timeout}s:\n{self.log_tail()}")
        if self.rules_path:
            try:
                self.load_rules(self.rules_path)
            except BaseException:  # e.g. a syntax error in the rules: never leave the JVM behind
                self.stop()
                raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process_group(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> FirestoreEmulator:
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
