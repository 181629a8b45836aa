"""Firebase Authentication users of the web app, and the custom claims the security rules read.

The backend sets `admin` (bool) and `familyId` on a user's ID token with firebase_admin. With
FIREBASE_AUTH_EMULATOR_HOST set, firebase_admin talks to the Auth emulator (no credentials needed);
otherwise it uses Application Default Credentials against the real project.

Rules never trust `familyId` alone: family access is decided by families/{id}.memberIds, so the
claim only tells the page which family to subscribe to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import firebase_admin
from firebase_admin import auth, credentials


class SignInUserError(ValueError):
    """Bad input for a sign-in user (the CLI prints it on one line and exits with code 2)."""


@dataclass(frozen=True)
class SignInUser:
    uid: str
    email: str
    claims: dict[str, object]


def _app(project: str | None) -> firebase_admin.App:
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT", "omnibutler-local")
    emulator = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST", "")
    name = f"emailsync-{project}-{emulator}"
    try:
        return firebase_admin.get_app(name)
    except ValueError:
        # The emulator needs no credentials; firebase_admin still wants one object to hold.
        credential = _EmulatorCredential() if emulator else credentials.ApplicationDefault()
        return firebase_admin.initialize_app(credential, {"projectId": project}, name=name)


class _EmulatorCredential(credentials.Base):
    def get_credential(self):  # type: ignore[no-untyped-def]
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()


def claims_for(*, admin: bool = False, family_id: str | None = None) -> dict[str, object]:
    claims: dict[str, object] = {"admin": admin}
    if family_id:
        claims["familyId"] = family_id
    return claims


def create_sign_in_user(
    email: str,
    password: str,
    *,
    uid: str | None = None,
    admin: bool = False,
    family_id: str | None = None,
    project: str | None = None,
) -> SignInUser:
    """Create (or, if the email exists, update) an email + password user with its claims."""
    if len(password) < 6:
        raise SignInUserError("the password must have at least 6 characters")
    app = _app(project)
    claims = claims_for(admin=admin, family_id=family_id)
    try:
        try:
            existing = auth.get_user_by_email(email, app=app)
        except auth.UserNotFoundError:
            kwargs = {"uid": uid} if uid else {}
            record = auth.create_user(email=email, password=password, app=app, **kwargs)
        else:
            if uid and existing.uid != uid:
                raise SignInUserError(f"{email} already belongs to user {existing.uid}, not {uid}")
            record = auth.update_user(existing.uid, password=password, app=app)
        auth.set_custom_user_claims(record.uid, claims, app=app)
    except (ValueError, auth.UidAlreadyExistsError, firebase_admin.exceptions.FirebaseError) as exc:
        if isinstance(exc, SignInUserError):
            raise
        raise SignInUserError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    return SignInUser(uid=record.uid, email=email, claims=claims)


def set_claims(
    uid: str, *, admin: bool = False, family_id: str | None = None, project: str | None = None
) -> dict[str, object]:
    """Replace a user's custom claims (a token issued afterwards carries them)."""
    claims = claims_for(admin=admin, family_id=family_id)
    auth.set_custom_user_claims(uid, claims, app=_app(project))
    return claims
