"""The real process: restarts, graceful shutdown, revocation by the CLI, and secrets kept out of logs."""

import os
import re
import stat
import time

KEY_PATTERN = r"^kw_(dev|prod)_[0-9A-Za-z]{36}$"


def test_everything_survives_a_restart(keyway):
    account, dev, prod = keyway.account_with_keys()
    keyway.start()
    status, _, body = keyway.request("POST", "/users", dev, {"username": "persisted", "fullName": "P"})
    assert status == 200
    user_id = body["userId"]
    new_dev = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    assert keyway.stop() == 0, "SIGTERM stops the server cleanly"

    keyway.start()
    status, _, body = keyway.request("GET", f"/users/{user_id}", new_dev)
    assert status == 200 and body["username"] == "persisted"
    status, _, body = keyway.request("GET", "/whoami", dev)
    assert status == 401 and body["code"] == "revoked_api_key", body
    status, _, body = keyway.request("GET", "/users", prod)
    assert status == 200 and body["data"] == [], "production never sees development's users"


def test_a_key_regenerated_by_the_cli_stops_working_on_a_running_server(keyway):
    account, dev, _ = keyway.account_with_keys()
    keyway.start(KEYWAY_REVOCATION_POLL_MS="200")
    assert keyway.request("GET", "/whoami", dev)[0] == 200
    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    deadline = time.monotonic() + 10
    code = None
    while time.monotonic() < deadline:
        status, _, body = keyway.request("GET", "/whoami", dev)
        code = body.get("code") if isinstance(body, dict) else None
        if code == "revoked_api_key":
            break
        time.sleep(0.05)
    assert code == "revoked_api_key"


def test_no_key_reaches_the_server_logs(keyway):
    account, dev, prod = keyway.account_with_keys()
    keyway.start()
    keyway.request("GET", "/whoami", dev)
    keyway.request("GET", f"/users?api_key={prod}")
    keyway.request("GET", "/users", headers={"Authorization": f"Basic {dev}"})
    keyway.request("POST", "/users", dev, {"username": "someone"})
    assert keyway.stop() == 0
    logs = "".join(keyway.logs)
    assert "Server started" in logs or "listening" in logs
    for key in (dev, prod):
        assert key[8:30] not in logs


def test_key_file_output_is_private_and_shows_only_the_hint(keyway):
    account = keyway.cli("accounts", "create", "--name", "Files Inc").stdout.strip()
    target = keyway.workdir / "dev.key"
    result = keyway.cli("keys", "generate", "--account", account, "--environment", "development", "--output", str(target))
    key = target.read_text().strip()
    assert key.startswith("kw_dev_") and len(key) == 43
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert key not in result.stdout and key not in result.stderr
    assert key[-4:] in result.stdout
    again = keyway.cli("keys", "generate", "--account", account, "--environment", "development", "--output", str(target), check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert target.read_text().strip() == key, "an existing key file is never overwritten"
    # The refused call changed nothing: the key in the file is still the active one.
    listing = keyway.cli("keys", "list", "--account", account).stdout
    assert listing.count("active") == 1 and key[-4:] in listing and key not in listing


def test_a_key_file_that_cannot_be_created_revokes_nothing(keyway):
    account = keyway.cli("accounts", "create", "--name", "Files Inc").stdout.strip()
    current = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    unwritable = keyway.workdir / "no-such-folder" / "dev.key"
    result = keyway.cli("keys", "generate", "--account", account, "--environment", "development", "--output", str(unwritable), check=False)
    assert result.returncode != 0 and "Cannot create" in result.stderr and str(unwritable) in result.stderr
    listing = keyway.cli("keys", "list", "--account", account).stdout
    assert listing.count("active") == 1 and current[-4:] in listing, "the previous key is still the active one"
    assert "revoked" not in listing


def test_a_lost_master_key_file_is_not_replaced_while_signing_keys_need_it(keyway):
    account, development, _ = keyway.account_with_keys()
    keyway.start()
    try:
        user = keyway.request("POST", "/users", development, {"username": "ada"})[2]["userId"]
        assert keyway.request("GET", f"/users/{user}/token", development)[0] == 200  # seals a signing key
    finally:
        keyway.stop()
    master = keyway.database.parent / "master.key"
    master.unlink()
    result = keyway.cli("signing-keys", "rotate", "--account", account, "--environment", "development", check=False)
    assert result.returncode != 0
    assert "master key file" in result.stderr and "restore master.key" in result.stderr
    assert not master.exists(), "no new master key was made"


def test_cli_errors_are_clear(keyway):
    missing = keyway.cli("keys", "generate", "--account", "acct_nope", "--environment", "development", check=False)
    assert missing.returncode != 0 and "No account 'acct_nope'" in missing.stderr
    assert "account_not_found" not in missing.stderr, "the CLI prints the message, not the API's code"
    bad_environment = keyway.cli("keys", "generate", "--account", "acct_nope", "--environment", "staging", check=False)
    assert bad_environment.returncode != 0 and "staging" in bad_environment.stderr
    bad_port = keyway.cli("serve", "--port", "70000", check=False)
    assert bad_port.returncode != 0 and "port" in bad_port.stderr
    bad_setting = keyway.cli("accounts", "list", check=False, KEYWAY_LOG_LEVEL="loud")
    assert bad_setting.returncode != 0 and "KEYWAY_LOG_LEVEL" in bad_setting.stderr
    empty_name = keyway.cli("accounts", "create", "--name", "  ", check=False)
    assert empty_name.returncode != 0 and "--name" in empty_name.stderr


# Every command that takes --account, with the rest of what it needs. The test
# below finds these commands in the help, so a new one cannot go unchecked.
COMMANDS_TAKING_AN_ACCOUNT = {
    ("keys", "generate"): ["--environment", "development"],
    ("keys", "list"): [],
    ("signing-keys", "rotate"): ["--environment", "development"],
    ("signing-keys", "list"): ["--environment", "development"],
    ("origins", "set"): ["--environment", "development", "https://app.example.com"],
    ("origins", "list"): [],
}


def leaf_commands(keyway, path=()):
    """Each command with no subcommands, found by walking the help, with its help text."""
    help_text = keyway.cli(*path, "--help").stdout
    listed = help_text.split("SUBCOMMANDS:", 1)[1].split("\n\n", 1)[0] if "SUBCOMMANDS:" in help_text else ""
    names = re.findall(r"^  ([a-z][a-z-]*)\b", listed, flags=re.MULTILINE)
    if not names:
        yield path, help_text
    for name in names:
        yield from leaf_commands(keyway, (*path, name))


def test_every_command_taking_an_account_refuses_an_unknown_one(keyway):
    taking_an_account = {path for path, help_text in leaf_commands(keyway) if "--account" in help_text}
    assert taking_an_account == set(COMMANDS_TAKING_AN_ACCOUNT)
    keyway.cli("accounts", "create", "--name", "Present Ltd")
    for command, rest in COMMANDS_TAKING_AN_ACCOUNT.items():
        refused = keyway.cli(*command, "--account", "acct_nope", *rest, check=False)
        assert refused.returncode != 0, command
        assert "No account 'acct_nope'" in refused.stderr and "account_not_found" not in refused.stderr, command
        assert refused.stdout == "", command


def test_every_command_has_help(keyway):
    for command in (
        [], ["serve"], ["migrate"], ["accounts"], ["accounts", "create"], ["accounts", "list"],
        ["keys"], ["keys", "generate"], ["keys", "list"],
        ["service-tokens"], ["service-tokens", "create"], ["service-tokens", "list"], ["service-tokens", "revoke"],
    ):
        result = keyway.cli(*command, "--help")
        assert "USAGE: keyway" in result.stdout, command


def test_migrate_reports_what_it_did(keyway):
    first = keyway.cli("migrate").stdout
    assert "Applied migration" in first
    second = keyway.cli("migrate").stdout
    assert "up to date" in second and "Applied" not in second
    assert "No accounts yet" in keyway.cli("accounts", "list").stdout
    keyway.cli("accounts", "create", "--name", "Listed Ltd")
    assert "Listed Ltd" in keyway.cli("accounts", "list").stdout
