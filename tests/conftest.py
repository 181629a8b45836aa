"""Shared test setup. Fixtures live in tests/fixtures/, one module per real component."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.firestore",
    "tests.fixtures.auth",
    "tests.fixtures.gmail",
    "tests.fixtures.pubsub",
    "tests.fixtures.gmail_contract",
    "tests.fixtures.prefect",
    "tests.fixtures.accounts",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soaks (`@pytest.mark.soak`) run only when the -m expression names them (`make soak` runs
    `-m soak`): `make test` and any other -m selection, such as `-m "not browser"`, leave them out.
    Each soak's smaller version, which shows the same behaviour, stays in the suite."""
    if "soak" in (config.option.markexpr or ""):
        return
    soaks = [item for item in items if item.get_closest_marker("soak")]
    if soaks:
        config.hook.pytest_deselected(items=soaks)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]
