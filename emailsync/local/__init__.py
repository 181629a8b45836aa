"""Local stand-ins for outside services: the Gmail API server, emulator managers, the seed."""
