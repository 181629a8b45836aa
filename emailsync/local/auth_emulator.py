"""Manage a local Firebase Authentication emulator (tests, the demo).

The emulator is part of `firebase-tools` (npm devDependency of web/, installed by `make web`); the auth
emulator is pure Node (no Java, no jar download). It is started in its own process group on free ports
and always stopped by whoever started it. It takes ~8 s to start on a 2-core machine, so tests start it
once per session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from emailsync.local.processes import free_port, stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[2]
FIREBASE_CLI_CANDIDATES = (REPO_ROOT / "web" / "node_modules" / ".bin" / "firebase",)


class AuthEmulatorNotFoundError(RuntimeError):
    pass


def find_firebase_cli() -> Path:
    explicit = os.environ.get("FIREBASE_CLI")
    for candidate in ([Path(explicit)] if explicit else []) + list(FIREBASE_CLI_CANDIDATES):
        if candidate.is_file():
            return candidate
    on_path = shutil.which("firebase")
    if on_path:
        return Path(on_path)
    raise AuthEmulatorNotFoundError(
        "firebase-tools not found: run `make web` (installs it into web/node_modules) "
        "or set FIREBASE_CLI to the `firebase` executable."
    )


class AuthEmulator:
    """A running Auth emulator: `with AuthEmulator(project) as auth: ...` or `start()` / `stop()`."""

    def __init__(self, project: str = "omnibutler-local", port: int | None = None) -> None:
        self.project = project
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._work_dir: tempfile.TemporaryDirectory[str] | None = None
        self._session = requests.Session()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def start(self, timeout: float = 60.0) -> AuthEmulator:
        cli = find_firebase_cli()
        node = shutil.which("node")
        if not node:
            raise AuthEmulatorNotFoundError("node (20+) is needed for the Firebase Auth emulator")
        self._work_dir = tempfile.TemporaryDirectory(prefix="auth-emulator-")
        work = Path(self._work_dir.name)
        config = {
            "emulators": {
                "auth": {"host": "127.0.0.1", "port": self.port},
                "hub": {"host": "127.0.0.1", "port": free_port()},
                "logging": {"host": "127.0.0.1", "port": free_port()},
                "ui": {"enabled": False},
            }
        }
        (work / "firebase.json").write_text(json.dumps(config))
        log = (work / "emulator.log").open("wb")
        env = os.environ | {
            "HOME": str(work),  # no firebase-tools config or update checks in the real home
            "FIREBASE_CLI_EXPERIMENTS": "",
            "NO_UPDATE_NOTIFIER": "1",
            "CI": "1",
        }
        self._process = subprocess.Popen(
            [str(cli), "emulators:start", "--only", "auth", "--project", self.project],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() kills node and anything it forks
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"Auth emulator exited early:\n{tail}")
            with contextlib.suppress(requests.RequestException, ValueError):
                body = self._session.get(self.base_url + "/", timeout=1).json()
                if body.get("authEmulator", {}).get("ready"):
                    return self
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"Auth emulator not ready after {timeout}s:\n{tail}")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process_group(process)
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    def __enter__(self) -> AuthEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self._work_dir is None:
            return ""
        try:
            text = (Path(self._work_dir.name) / "emulator.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------------------- admin calls

    def clear(self) -> None:
        """Delete every account of the project."""
        url = f"{self.base_url}/emulator/v1/projects/{self.project}/accounts"
        self._session.delete(url, timeout=10).raise_for_status()

    def sign_in(self, email: str, password: str) -> dict[str, Any]:
        """Email + password sign-in as a client would do it: the emulator's ID token and uid."""
        url = f"{self.base_url}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=any"
        body = {"email": email, "password": password, "returnSecureToken": True}
        response = self._session.post(url, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def environ(self) -> dict[str, str]:
        """Environment variables that point firebase_admin (and child processes) at this emulator."""
        return {"FIREBASE_AUTH_EMULATOR_HOST": self.host, "GOOGLE_CLOUD_PROJECT": self.project}
