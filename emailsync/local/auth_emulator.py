"""Manage a local Firebase Authentication emulator (tests, the demo).

The emulator is part of `firebase-tools` (npm devDependency of web/, installed by `make web`); the auth
emulator is pure Node (no Java, no jar download). It is started in its own process group on free ports
and always stopped by whoever started it. It takes ~8 s to start on a 2-core machine, so tests start it
once per session.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from emailsync.local.processes import EmulatorProcess, free_port

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


class AuthEmulator(EmulatorProcess):
    """A running Auth emulator: `with AuthEmulator(project) as auth: ...` or `start()` / `stop()`."""

    label = "Auth emulator"
    work_dir_prefix = "auth-emulator-"
    poll_interval = 0.2

    def __init__(self, project: str = "omnibutler-local", port: int | None = None) -> None:
        super().__init__(port)
        self.project = project

    def _command(self) -> list[str]:
        cli = find_firebase_cli()
        if not shutil.which("node"):
            raise AuthEmulatorNotFoundError("node (20+) is needed for the Firebase Auth emulator")
        return [str(cli), "emulators:start", "--only", "auth", "--project", self.project]

    def _prepare(self, work_dir: Path) -> dict[str, Any]:
        config = {
            "emulators": {
                "auth": {"host": "127.0.0.1", "port": self.port},
                "hub": {"host": "127.0.0.1", "port": free_port()},
                "logging": {"host": "127.0.0.1", "port": free_port()},
                "ui": {"enabled": False},
            }
        }
        (work_dir / "firebase.json").write_text(json.dumps(config))
        env = os.environ | {
            "HOME": str(work_dir),  # no firebase-tools config or update checks in the real home
            "FIREBASE_CLI_EXPERIMENTS": "",
            "NO_UPDATE_NOTIFIER": "1",
            "CI": "1",
        }
        return {"cwd": work_dir, "env": env}

    def _ready(self) -> bool:
        body = self._session.get(self.base_url + "/", timeout=1).json()
        return bool(body.get("authEmulator", {}).get("ready"))

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
