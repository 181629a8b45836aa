"""The live progress page, in Debian's chromium, against the real Firestore emulator and firestore.rules.

The browser scenarios are tests/browser/progress_page.test.mjs (node's test runner + playwright-core).
This module starts what they need (the Firestore emulator with the project's rules, the session's
Firebase Auth emulator, the page server, the backend control endpoint through which the scenarios
seed sign-in users and make the backend write progress), runs node once and reports every scenario
as its own test. Every scenario signs in through the page's form. Set EMAILSYNC_UPDATE_SCREENSHOT=1
to refresh docs/screenshot-progress.png (the owner's page at 70%) and docs/screenshot-<state>.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from emailsync.firestore.client import get_firestore_client
from emailsync.local.auth_emulator import AuthEmulator
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.local.web_server import start_web_server
from tests.browser.backend_control import BackendActions, BackendControlServer
from tests.fixtures.firestore import REPO_ROOT, TEST_PROJECT

BROWSER_SCENARIOS_FILE = REPO_ROOT / "tests" / "browser" / "progress_page.test.mjs"
SCREENSHOT = REPO_ROOT / "docs" / "screenshot-progress.png"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SCENARIOS = [
    "owner watches their sync go from pending through 30% and 70% to completed at 100%",
    "family member sees the owner's family sync live, not the owner's private syncs",
    "stranger sees 'No syncs' and none of the household's data",
    "user whose token carries a forged familyId claim gets a friendly permission message and no data",
    "failed sync shows Failed and its error text",
    "admin sees the syncs of every household, with or without a family",
    "signed out: the sign-in form, no data on the page, and the rules refuse an unauthenticated read",
    "skipped trigger shows 'Already syncing', not a finished sync; earlier syncs fold away; "
    "a new incremental sync appears live",
    "revoked Gmail shows 'Reconnect Gmail' for that account",
    "Google sign-in (the Auth emulator's fake Google account) signs in a user with no Gmail connected",
]

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@dataclass
class BrowserRun:
    output: str
    failures: dict[str, str | None]  # scenario -> failure text, None when it passed

    def explain(self, scenario: str) -> str:
        return f"{self.failures.get(scenario) or 'not run'}\n--- node test output ---\n{self.output}"


def _require_browser_tools() -> str:
    """Path of node; skips (fails under CI, where `make test` installs them) when a tool is missing."""
    node = shutil.which("node")
    missing = [name for name, ok in (("chromium", CHROMIUM.is_file()), ("node", node)) if not ok]
    if missing:
        reason = f"{' and '.join(missing)} not installed: run `make browser-deps` (Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    return node


def _junit_failures(report: Path) -> dict[str, str | None]:
    failures: dict[str, str | None] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failure = case.find("failure")
        failures[case.attrib["name"]] = None if failure is None else (failure.text or "").strip()
    return failures


@pytest.fixture(scope="module")
def browser_run(
    firestore_emulator: FirestoreEmulator,
    auth_emulator: AuthEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> BrowserRun:
    node = _require_browser_tools()
    build_command = ["make", "-s", "-C", str(REPO_ROOT / "web"), "build"]
    build = subprocess.run(build_command, capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"building the page (make -C web build) failed:\n{build.stdout}{build.stderr}")
    # Another test may have loaded other rules into the shared emulator: these scenarios test the real ones.
    firestore_emulator.load_rules(REPO_ROOT / "firestore.rules", project=TEST_PROJECT)
    work_dir = tmp_path_factory.mktemp("browser")
    report = work_dir / "junit.xml"
    screenshot = SCREENSHOT if os.environ.get("EMAILSYNC_UPDATE_SCREENSHOT") else work_dir / "progress.png"
    client = get_firestore_client(TEST_PROJECT)
    actions = BackendActions(firestore_emulator, client, TEST_PROJECT, auth_emulator)
    with (
        start_web_server(firestore_emulator.host, TEST_PROJECT, auth_host=auth_emulator.host) as web,
        BackendControlServer(actions) as control,
    ):
        env = os.environ | {
            "PROGRESS_PAGE_URL": web.url,
            "BACKEND_CONTROL_URL": control.url,
            "SCREENSHOT_PATH": str(screenshot),
            "SCREENSHOT_DIR": str(
                SCREENSHOT.parent if os.environ.get("EMAILSYNC_UPDATE_SCREENSHOT") else work_dir
            ),
            "CHROMIUM_PATH": str(CHROMIUM),
        }
        completed = subprocess.run(
            [
                node,
                "--test",
                "--test-reporter=spec",
                "--test-reporter-destination=stdout",
                "--test-reporter=junit",
                f"--test-reporter-destination={report}",
                str(BROWSER_SCENARIOS_FILE),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    output = completed.stdout + completed.stderr
    print(output)  # shown with -s, or under a failing test
    if not report.is_file():
        pytest.fail(f"node produced no test report (exit {completed.returncode}):\n{output}")
    return BrowserRun(output=output, failures=_junit_failures(report))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_progress_page_in_chromium(browser_run: BrowserRun, scenario: str) -> None:
    assert scenario in browser_run.failures, browser_run.explain(scenario)
    assert browser_run.failures[scenario] is None, browser_run.explain(scenario)


def test_every_browser_scenario_is_reported_here(browser_run: BrowserRun) -> None:
    assert sorted(browser_run.failures) == sorted(SCENARIOS), browser_run.output


@pytest.fixture
def page_server_dist(tmp_path: Path) -> Iterator[Path]:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>progress</title>")
    (dist / "app.js").write_text("console.log('progress');")
    yield dist


def test_page_server_serves_the_page_and_tells_it_where_the_emulator_is(page_server_dist: Path) -> None:
    with start_web_server("127.0.0.1:8181", "omnibutler-local", dist_dir=page_server_dist) as web:
        assert requests.get(web.url + "config.json", timeout=5).json() == {
            "emulatorHost": "127.0.0.1:8181",
            "project": "omnibutler-local",
        }
        page = requests.get(web.page_url("app-user-1", "fam-1"), timeout=5)
        script = requests.get(web.url + "app.js", timeout=5)
    assert page.status_code == 200 and "<title>progress</title>" in page.text
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert web.page_url("app-user-1", "fam-1") == f"{web.url}?uid=app-user-1&familyId=fam-1"


def test_page_server_says_how_to_build_the_page_when_it_is_missing(tmp_path: Path) -> None:
    with start_web_server("127.0.0.1:8181", "omnibutler-local", dist_dir=tmp_path / "missing") as web:
        response = requests.get(web.url, timeout=5)
    assert response.status_code == 503
    assert "make web" in response.text
