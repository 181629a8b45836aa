"""`emailsync user create` against the real Auth emulator: the token a sign-in gets carries the claims."""

from __future__ import annotations

import base64
import json

from typer.testing import CliRunner

from emailsync.cli import app
from emailsync.local.auth_emulator import AuthEmulator
from tests.fixtures.firestore import TEST_PROJECT

runner = CliRunner()


def _claims(id_token: str) -> dict[str, object]:
    payload = id_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_user_create_sets_admin_and_family_claims(auth_emulator: AuthEmulator) -> None:
    auth_emulator.clear()
    args = ["user", "create", "ada@example.com", "--password", "secret-1", "--family-id", "fam-1"]
    result = runner.invoke(app, [*args, "--uid", "app-user-1"], env={"GOOGLE_CLOUD_PROJECT": TEST_PROJECT})
    assert result.exit_code == 0, result.output
    claims = _claims(auth_emulator.sign_in("ada@example.com", "secret-1")["idToken"])
    assert claims["sub"] == "app-user-1"
    assert claims["familyId"] == "fam-1" and claims["admin"] is False

    again = runner.invoke(
        app,
        ["user", "create", "ada@example.com", "--password", "secret-2", "--admin"],
        env={"GOOGLE_CLOUD_PROJECT": TEST_PROJECT},
    )
    assert again.exit_code == 0, again.output
    claims = _claims(auth_emulator.sign_in("ada@example.com", "secret-2")["idToken"])
    assert claims["admin"] is True and "familyId" not in claims


def test_user_create_with_a_short_password_is_one_line_and_exit_code_2(auth_emulator: AuthEmulator) -> None:
    result = runner.invoke(
        app,
        ["user", "create", "bob@example.com", "--password", "123"],
        env={"GOOGLE_CLOUD_PROJECT": TEST_PROJECT, "COLUMNS": "200"},
    )
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "at least 6 characters" in result.output
