"""firestore.rules against the real emulator, as the web app meets them: REST calls with Firebase ID tokens.

The emulator accepts unsigned (`alg: none`) ID tokens, so every persona is a token we mint here.
Data is seeded with the Python client, which (like the backend's Admin SDK) bypasses the rules.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.cloud import firestore

from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.progress import ProgressWriter
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.models import SyncMode
from tests.fixtures.firestore import REPO_ROOT, TEST_PROJECT

pytestmark = pytest.mark.integration

# ---------------------------------------------------------------------------------------- the household
# Alice (owner of every seeded document) and Bob are the Smiths; Carol is a Jones; Dave has no family.
PERSONAS: dict[str, dict[str, Any] | None] = {
    "owner": {"uid": "alice"},
    "family_member": {"uid": "bob"},
    "other_family_member": {"uid": "carol"},
    "stranger": {"uid": "dave"},
    "admin": {"uid": "erin", "admin": True},
    "admin_claim_as_string": {"uid": "frank", "admin": "true"},
    # Mallory's token claims the Smiths' family (custom claim familyId), but families/smiths.memberIds
    # does not list her: family access follows the families document, never the claim.
    "forged_family_claim": {"uid": "mallory", "familyId": "smiths"},
    "unauthenticated": None,
}

# Collection → the seeded document the operations aim at (path under .../documents).
DOCUMENTS = {
    "syncProgress": "syncProgress/sync-alice",
    "emails": "providerUsers/alice-gmail/emails/18c0ffee",
    "providerUsers": "providerUsers/alice-gmail",
    "appUsers": "appUsers/alice",
    "families": "families/smiths",
    "providerCredentials": "providerCredentials/alice-gmail",
    "syncState": "syncState/alice-gmail",
}

OPERATIONS = ["get", "query_own", "query_family", "query_all", "create", "update", "delete"]
READS = ["get", "query_own", "query_family", "query_all"]

# Everything not listed here must be denied. `query_own` filters on appUserId == caller's uid and
# `query_family` on familyId == "smiths" (the Smiths' live subscription; a foreign family for Carol).
ANYONE_SIGNED_IN = [
    "owner",
    "family_member",
    "other_family_member",
    "stranger",
    "admin",
    "admin_claim_as_string",
    "forged_family_claim",
]
ALLOWED: set[tuple[str, str, str]] = {
    # syncProgress: owner, family, admin; everybody's own-filtered subscription is a valid query.
    *{(persona, "query_own", "syncProgress") for persona in ANYONE_SIGNED_IN},
    ("owner", "get", "syncProgress"),
    ("owner", "query_family", "syncProgress"),
    ("family_member", "get", "syncProgress"),
    ("family_member", "query_family", "syncProgress"),
    *{("admin", read, "syncProgress") for read in READS},
    # emails and providerUsers: the owner and admins only, never the family.
    *{
        (persona, "query_own", collection)
        for persona in ANYONE_SIGNED_IN
        for collection in ("emails", "providerUsers")
    },
    ("owner", "get", "emails"),
    ("owner", "get", "providerUsers"),
    *{("admin", read, collection) for read in READS for collection in ("emails", "providerUsers")},
    # appUsers: one's own document; families: its members; admins read both.
    ("owner", "get", "appUsers"),
    ("owner", "get", "families"),
    ("family_member", "get", "families"),
    *{("admin", read, collection) for read in READS for collection in ("appUsers", "families")},
    # providerCredentials and syncState: nobody, admins included. Writes: nobody, anywhere.
}


def case_id(persona: str, operation: str, collection: str) -> str:
    verdict = "allowed" if (persona, operation, collection) in ALLOWED else "denied"
    return f"{persona}-{operation}-{collection}-{verdict}"


CASES = [
    pytest.param(
        persona,
        operation,
        collection,
        (persona, operation, collection) in ALLOWED,
        id=case_id(persona, operation, collection),
    )
    for collection in DOCUMENTS
    for persona in PERSONAS
    for operation in OPERATIONS
]


def id_token(claims: dict[str, Any]) -> str:
    """An unsigned Firebase ID token (the emulator does not check signatures)."""
    now = int(time.time())
    payload = {
        "sub": claims["uid"],
        "user_id": claims["uid"],
        "iat": now,
        "auth_time": now,
        "exp": now + 3600,
        "aud": TEST_PROJECT,
        "iss": f"https://securetoken.google.com/{TEST_PROJECT}",
        "firebase": {"sign_in_provider": "custom", "identities": {}},
        **{key: value for key, value in claims.items() if key != "uid"},
    }

    def encode(part: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

    return f"{encode({'alg': 'none', 'typ': 'JWT'})}.{encode(payload)}."


class FrontendClient:
    """The Firestore REST API as one persona of the web app sees it."""

    def __init__(self, emulator: FirestoreEmulator, session: requests.Session, persona: str) -> None:
        claims = PERSONAS[persona]
        self.uid = claims["uid"] if claims else "alice"  # unauthenticated callers still ask for Alice's data
        self.documents = f"{emulator.base_url}/v1/projects/{TEST_PROJECT}/databases/(default)/documents"
        self.session = session
        self.headers = {"Authorization": f"Bearer {id_token(claims)}"} if claims else {}

    def get(self, path: str) -> requests.Response:
        return self.session.get(f"{self.documents}/{path}", headers=self.headers, timeout=10)

    def query(
        self, path: str, field: str | None = None, value: str | None = None, all_descendants: bool = False
    ) -> requests.Response:
        """Query the collection `path` is in; `all_descendants`: every collection of that name (a group)."""
        segments = path.split("/")
        parent, collection = ("" if all_descendants else "/".join(segments[:-2])), segments[-2]
        structured: dict[str, Any] = {
            "from": [{"collectionId": collection, "allDescendants": all_descendants}]
        }
        if field is not None:
            structured["where"] = {
                "fieldFilter": {"field": {"fieldPath": field}, "op": "EQUAL", "value": {"stringValue": value}}
            }
        url = f"{self.documents}/{parent}:runQuery" if parent else f"{self.documents}:runQuery"
        return self.session.post(url, json={"structuredQuery": structured}, headers=self.headers, timeout=10)

    def create(self, path: str) -> requests.Response:
        new_document = path.rsplit("/", 1)[0] + "/created-by-client"
        body = {"fields": {"appUserId": {"stringValue": self.uid}, "familyId": {"stringValue": "smiths"}}}
        return self.session.patch(
            f"{self.documents}/{new_document}",
            params={"currentDocument.exists": "false"},
            json=body,
            headers=self.headers,
            timeout=10,
        )

    def update(self, path: str) -> requests.Response:
        return self.session.patch(
            f"{self.documents}/{path}",
            params={"updateMask.fieldPaths": "progress"},
            json={"fields": {"progress": {"integerValue": "100"}}},
            headers=self.headers,
            timeout=10,
        )

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(f"{self.documents}/{path}", headers=self.headers, timeout=10)

    def perform(self, operation: str, path: str) -> requests.Response:
        if operation == "get":
            return self.get(path)
        if operation == "query_own":
            return self.query(path, "appUserId", self.uid)
        if operation == "query_family":
            return self.query(path, "familyId", "smiths")
        if operation == "query_all":
            return self.query(path)
        return {"create": self.create, "update": self.update, "delete": self.delete}[operation](path)


def seed(client: firestore.Client) -> None:
    owned = {"appUserId": "alice", "familyId": "smiths"}
    documents: dict[str, dict[str, Any]] = {
        "families/smiths": {"memberIds": ["alice", "bob"]},
        "families/joneses": {"memberIds": ["carol"]},
        "appUsers/alice": {"email": "alice@example.com", "familyId": "smiths", "admin": False},
        "appUsers/bob": {"email": "bob@example.com", "familyId": "smiths", "admin": False},
        "appUsers/carol": {"email": "carol@example.com", "familyId": "joneses", "admin": False},
        DOCUMENTS["providerUsers"]: {**owned, "provider": "google", "email": "alice@gmail.example"},
        DOCUMENTS["emails"]: {**owned, "messageId": "18c0ffee", "subject": "School trip"},
        DOCUMENTS["providerCredentials"]: {"token": "local-test-token"},
        DOCUMENTS["syncState"]: {"activeSyncId": "sync-alice", "lastHistoryId": "100"},
    }
    batch = client.batch()
    for path, data in documents.items():
        batch.set(client.document(path), data)
    batch.commit()
    # syncProgress has one writer, in tests too.
    sync_id = DOCUMENTS["syncProgress"].rsplit("/", 1)[1]
    progress = ProgressWriter(client, min_interval_seconds=0)
    progress.create_pending(sync_id, app_user_id="alice", family_id="smiths", provider_user_id="alice-gmail")
    progress.start(sync_id, SyncMode.BACKFILL)
    progress.update(sync_id, 40)


@pytest.fixture(scope="module")
def household(firestore_emulator: FirestoreEmulator) -> Iterator[requests.Session]:
    """Seeded once for the whole matrix: every operation here is a read or a refused write."""
    firestore_emulator.load_rules(REPO_ROOT / "firestore.rules", project=TEST_PROJECT)
    firestore_emulator.clear(TEST_PROJECT)
    seed(get_firestore_client(TEST_PROJECT))
    with requests.Session() as session:
        yield session


@pytest.mark.parametrize(("persona", "operation", "collection", "allowed"), CASES)
def test_rules(
    firestore_emulator: FirestoreEmulator,
    household: requests.Session,
    persona: str,
    operation: str,
    collection: str,
    allowed: bool,
) -> None:
    response = FrontendClient(firestore_emulator, household, persona).perform(
        operation, DOCUMENTS[collection]
    )

    expected = 200 if allowed else 403
    assert response.status_code == expected, response.text[:300]


def result_ids(response: requests.Response) -> list[str]:
    return [item["document"]["name"].rsplit("/", 1)[1] for item in response.json() if "document" in item]


def test_family_subscription_shows_the_family_members_sync(
    firestore_emulator: FirestoreEmulator, household: requests.Session
) -> None:
    bob = FrontendClient(firestore_emulator, household, "family_member")

    assert result_ids(bob.query(DOCUMENTS["syncProgress"], "familyId", "smiths")) == ["sync-alice"]
    assert result_ids(bob.query(DOCUMENTS["syncProgress"], "appUserId", "bob")) == []


def test_owner_searches_all_their_accounts_emails_with_a_collection_group_query(
    firestore_emulator: FirestoreEmulator, household: requests.Session
) -> None:
    alice = FrontendClient(firestore_emulator, household, "owner")
    bob = FrontendClient(firestore_emulator, household, "family_member")
    emails = DOCUMENTS["emails"]

    assert result_ids(alice.query(emails, "appUserId", "alice", all_descendants=True)) == ["18c0ffee"]
    assert bob.query(emails, "appUserId", "alice", all_descendants=True).status_code == 403
    assert bob.query(emails, "familyId", "smiths", all_descendants=True).status_code == 403


def test_refused_writes_leave_the_documents_as_the_backend_wrote_them(
    firestore_emulator: FirestoreEmulator, household: requests.Session
) -> None:
    client = get_firestore_client(TEST_PROJECT)
    admin = FrontendClient(firestore_emulator, household, "admin")
    for collection, path in DOCUMENTS.items():
        admin.create(path)
        admin.update(path)
        admin.delete(path)
        assert client.document(path).get().exists, collection
        assert not client.document(path.rsplit("/", 1)[0] + "/created-by-client").get().exists
    assert client.document(DOCUMENTS["syncProgress"]).get().to_dict()["progress"] == 40
