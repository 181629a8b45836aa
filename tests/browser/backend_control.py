"""The backend side of the browser tests: a loopback HTTP endpoint through which the node/Playwright
scenarios make the real backend write Firestore (the emulator) while a page watches.

`POST /rpc {"method": NAME, "args": {...}}` calls `NAME(**args)` on `BackendActions`; the answer is
`{"result": ...}` or, with status 500, `{"error": "..."}`. Only the methods of `BackendActions` exist.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.cloud import firestore
from pydantic import BaseModel, ValidationError

from emailsync.firestore.progress import ProgressWriter
from emailsync.firestore.users import AppUserRepository, FamilyRepository
from emailsync.local.auth_emulator import AuthEmulator
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.models import AppUser, Family, SyncWindow
from emailsync.sign_in_users import create_sign_in_user
from emailsync.sync.run import SKIP_REASON_ALREADY_SYNCING

OWNER_ID = "app-user-1"
MEMBER_ID = "app-user-2"
STRANGER_ID = "stranger-1"
ADMIN_ID = "support-admin-1"
FORGER_ID = "mallory-1"
FAMILY_ID = "fam-1"
PASSWORD = "correct-horse-1"


class RpcCall(BaseModel):
    method: str
    args: dict[str, Any] = {}


class BackendActions:
    """What a scenario may ask the backend to do: seed the household, write progress like a sync does."""

    def __init__(
        self, emulator: FirestoreEmulator, client: firestore.Client, project: str, auth: AuthEmulator
    ) -> None:
        self._emulator = emulator
        self._auth = auth
        self._client = client
        self._project = project
        self._progress = ProgressWriter(client, min_interval_seconds=0)

    def reset_household(self) -> dict[str, Any]:
        """Empty database and Auth emulator: one family (owner + member), a stranger without a family,
        an admin (custom claim), and a user whose `familyId` claim names the family she is not in.

        Every user signs in with email + PASSWORD; uid = appUsers id; claims set with firebase_admin.
        """
        self._emulator.clear(self._project)
        self._auth.clear()
        users = AppUserRepository(self._client)
        people = {
            "owner": (OWNER_ID, "ada@example.com", FAMILY_ID, False),
            "member": (MEMBER_ID, "grace@example.com", FAMILY_ID, False),
            "stranger": (STRANGER_ID, "eve@example.com", None, False),
            "admin": (ADMIN_ID, "support@example.com", None, True),
            "forger": (FORGER_ID, "mallory@example.com", None, False),
        }
        emails = {}
        for role, (uid, email, family_id, admin) in people.items():
            users.put(uid, AppUser(email=email, family_id=family_id, admin=admin))
            # The forger's token claims the family; families/fam-1.memberIds does not list her.
            claimed_family = FAMILY_ID if role == "forger" else family_id
            create_sign_in_user(
                email, PASSWORD, uid=uid, admin=admin, family_id=claimed_family, project=self._project
            )
            emails[role] = email
        FamilyRepository(self._client).put(FAMILY_ID, Family(member_ids=[OWNER_ID, MEMBER_ID]))
        return {
            "owner": OWNER_ID,
            "member": MEMBER_ID,
            "stranger": STRANGER_ID,
            "admin": ADMIN_ID,
            "forger": FORGER_ID,
            "family": FAMILY_ID,
            "emails": emails,
            "password": PASSWORD,
        }

    def put_provider_user(
        self,
        provider_user_id: str,
        app_user_id: str,
        email: str,
        family_id: str | None = None,
        active: bool = True,
        needs_reauth: bool = False,
    ) -> None:
        """providerUsers/{id} as the backend keeps it (services.gmail.needsReauth set on a revoked grant)."""
        gmail = {"active": active, "needsReauth": needs_reauth}
        document = {"appUserId": app_user_id, "familyId": family_id, "provider": "google", "email": email}
        self._client.collection("providerUsers").document(provider_user_id).set(
            document | {"services": {"gmail": gmail}}
        )

    # Progress is written by the real ProgressWriter, as a sync does; without coalescing, so every
    # step a scenario takes is one write the page must show.

    def create_pending(
        self, sync_id: str, app_user_id: str, family_id: str | None, provider_user_id: str, trigger: str
    ) -> None:
        self._progress.create_pending(sync_id, app_user_id, family_id, provider_user_id, trigger)

    def start(self, sync_id: str, mode: str, total_estimate: int | None = None) -> None:
        self._progress.start(sync_id, mode, total_estimate=total_estimate)

    def update(self, sync_id: str, progress: int, **details: Any) -> None:
        self._progress.update(sync_id, progress, **_details(details))

    def complete(self, sync_id: str, **details: Any) -> None:
        self._progress.complete(sync_id, **_details(details))

    def fail(self, sync_id: str, error: str, **details: Any) -> None:
        self._progress.fail(sync_id, error, **_details(details))

    def skip(self, sync_id: str, active_sync_id: str) -> None:
        """What the flow writes for a trigger that found another sync holding the lease."""
        self._progress.skip(sync_id, active_sync_id, SKIP_REASON_ALREADY_SYNCING)


def _details(details: dict[str, Any]) -> dict[str, Any]:
    """Scenario details arrive as JSON: the current window's ISO strings become timestamps."""
    if "currentWindow" in details:
        details = details | {"currentWindow": SyncWindow.model_validate(details["currentWindow"])}
    return details


class BackendControlServer:
    """`BackendActions` over HTTP on 127.0.0.1 for the node test process. Context manager."""

    def __init__(self, actions: BackendActions) -> None:
        handler = _rpc_handler(actions)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="backend-control", daemon=True
        )
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/rpc"

    def __enter__(self) -> BackendControlServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _rpc_handler(actions: BackendActions) -> type[BaseHTTPRequestHandler]:
    methods = {name for name in vars(BackendActions) if not name.startswith("_")}

    class RpcHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                call = RpcCall.model_validate_json(self.rfile.read(int(self.headers["Content-Length"])))
                if call.method not in methods:
                    raise ValueError(f"unknown backend action {call.method!r}")
                result = getattr(actions, call.method)(**call.args)
                self._answer(HTTPStatus.OK, {"result": result})
            except (ValidationError, ValueError, TypeError) as exc:
                self._answer(HTTPStatus.BAD_REQUEST, {"error": f"{type(exc).__name__}: {exc}"})
            except Exception as exc:
                self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

        def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the node test output says what happened

    return RpcHandler
