"""The repositories by one name, for callers that import them from here (the CLI, `emailsync/cli/`).

They live by collection family: `users.py`, `emails.py`, `sync_state.py`; shared pieces in
`documents.py`. New code imports from those modules.
"""

from emailsync.firestore.emails import EmailRepository, cosine_similarity
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import (
    AppUserRepository,
    CredentialsRepository,
    FamilyRepository,
    ProviderUserRepository,
)

__all__ = [
    "AppUserRepository",
    "CredentialsRepository",
    "EmailRepository",
    "FamilyRepository",
    "ProviderUserRepository",
    "SyncStateRepository",
    "cosine_similarity",
]
