"""The local Gmail-API-compatible server (see server.py)."""
