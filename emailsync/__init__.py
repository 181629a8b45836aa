"""emailsync: the Gmail sync backend of OmniButler (domain library, no Prefect imports)."""

__version__ = "0.1.0"
