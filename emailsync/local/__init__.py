"""Local stand-ins for cloud services (emulator managers, local servers)."""
