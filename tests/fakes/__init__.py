"""Local stand-ins for external HTTP services the sandbox cannot reach (real HTTP, real clients)."""
