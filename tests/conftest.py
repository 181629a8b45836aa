"""Shared test setup. Fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.firestore",
    "tests.fixtures.auth",
    "tests.fixtures.gmail",
    "tests.fixtures.gmail_contract",
    "tests.fixtures.prefect",
]
