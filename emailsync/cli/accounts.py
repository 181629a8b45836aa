"""The commands about accounts: purging a disconnected provider user's data (`emailsync purge`) and
the web app's sign-in users (`emailsync user create`)."""

from __future__ import annotations

from typing import Annotated

import typer

from emailsync.cli.console import configure_logging, fail, out, require_provider_user


def purge(
    provider_user_id: Annotated[str, typer.Argument(help="providerUsers document id (Gmail disconnected)")],
    batch_size: Annotated[int, typer.Option(min=1, max=500, help="emails deleted per commit")] = 200,
) -> None:
    """Delete a disconnected user's emails, sync state and credentials (resumable, idempotent).

    What `EMAILSYNC_ON_DISCONNECT=purge` makes the watcher do on a disconnect; run it again after a crash,
    or for a user who disconnected while no watcher was running.
    """
    from emailsync.firestore.client import get_firestore_client
    from emailsync.firestore.users import ProviderUserRepository
    from emailsync.lifecycle import purge_provider_user

    require_provider_user(provider_user_id)
    client = get_firestore_client()
    user = ProviderUserRepository(client).get(provider_user_id)
    if user is not None and user.gmail_active:
        raise fail(f"Gmail of {provider_user_id} is still connected; disconnect it first")
    configure_logging()
    summary = purge_provider_user(client, provider_user_id, batch_size=batch_size)
    if not summary.completed:
        raise fail(f"purge of {provider_user_id} stopped: {summary.stopped}")
    out().print(
        f"purged {provider_user_id}: {summary.emails_deleted} emails deleted in {summary.batches} batches, "
        "credentials and sync state removed"
    )


user_app = typer.Typer(help="Sign-in users of the web app (Firebase Authentication) and their claims.")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Argument(help="sign-in e-mail address")],
    password: Annotated[str, typer.Option(help="sign-in password (at least 6 characters)")],
    admin: Annotated[bool, typer.Option("--admin", help="custom claim admin = true")] = False,
    family_id: Annotated[str | None, typer.Option(help="custom claim familyId")] = None,
    uid: Annotated[str | None, typer.Option(help="the user's uid = its appUsers id (default: new)")] = None,
) -> None:
    """Create (or update) an email + password user and set its `admin` / `familyId` claims.

    Uses the Auth emulator at FIREBASE_AUTH_EMULATOR_HOST when set, else the real project.
    """
    from emailsync.sign_in_users import SignInUserError, create_sign_in_user

    if "@" not in email:
        raise fail(f"not an e-mail address: {email!r}")
    try:
        user = create_sign_in_user(email, password, uid=uid, admin=admin, family_id=family_id)
    except SignInUserError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # unreachable emulator, missing credentials: one line, not a traceback
        raise fail(
            f"could not create {email}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    out().print(f"user {user.uid} ({user.email}) claims {user.claims}")
