"""The real process: restarts, graceful shutdown, revocation by the CLI, and secrets kept out of logs."""

import base64
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import time

from conftest import well_formed_key

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
    poll_ms = 200
    keyway.start(KEYWAY_REVOCATION_POLL_MS=str(poll_ms))
    assert keyway.request("GET", "/whoami", dev)[0] == 200  # cached as active
    # Past the poll's first tick, which reads the store whatever the watch does: from then on,
    # while the watch is up, the poll reads it only every 10 s. (Waiting less could only hide a
    # broken watch, never fail a working one.)
    time.sleep(3 * poll_ms / 1000)
    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    revoked = time.monotonic()
    # The README's bound is KEYWAY_REVOCATION_POLL_MS (SQLite's change watch is faster still);
    # plus 2 s for a noisy shared machine. A watch that stopped following would leave only
    # its 10 s safety-net poll, and fail this.
    bound = poll_ms / 1000 + 2.0
    while True:
        status, _, body = keyway.request("GET", "/whoami", dev)
        code = body.get("code") if isinstance(body, dict) else None
        if code == "revoked_api_key" or time.monotonic() - revoked > bound:
            break
        time.sleep(0.02)
    assert code == "revoked_api_key", f"still accepted {bound}s after the CLI revoked it"


def active_requests(keyway, method: str) -> int:
    """Requests with `method` the server is handling, from Hummingbird's gauge on /metrics."""
    metrics = keyway.request("GET", "/metrics")[2]
    match = re.search(rf'^http_server_active_requests{{http_request_method="{method}"}} ([0-9.e+]+)$', metrics, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def test_sigterm_stops_accepting_lets_the_request_in_flight_finish_and_exits_0(keyway):
    account, dev, _ = keyway.account_with_keys()
    keyway.start()
    body = json.dumps({"username": "drained"}).encode()
    head = (
        "POST /users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {dev}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", keyway.port), timeout=30) as connection:
        connection.sendall(head.encode() + body[:4])
        # In flight: the server has its head and waits for the rest of its body.
        deadline = time.monotonic() + 30
        while active_requests(keyway, "POST") != 1:
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.02)

        keyway.process.send_signal(signal.SIGTERM)
        # Shutting down: new connections are refused.
        while True:
            try:
                socket.create_connection(("127.0.0.1", keyway.port), timeout=5).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.02)

        connection.sendall(body[4:])
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    status_line, _, payload = response.decode().partition("\r\n")
    assert status_line == "HTTP/1.1 200 OK", response
    user_id = json.loads(payload.split("\r\n\r\n", 1)[1])["userId"]
    assert keyway.process.wait(timeout=30) == 0
    keyway.process = None

    keyway.start()
    status, _, user = keyway.request("GET", f"/users/{user_id}", dev)
    assert status == 200 and user["username"] == "drained", "what was acknowledged during the stop was kept"


def test_the_key_cache_limit_bounds_what_a_running_server_remembers(keyway):
    account = keyway.cli("accounts", "create", "--name", "Cache").stdout.strip()  # no key yet
    keyway.start(KEYWAY_KEY_CACHE_LIMIT="2")
    invented = well_formed_key()

    def whoami(key) -> str | int:
        status, _, body = keyway.request("GET", "/whoami", key)
        return body["code"] if status == 401 else status

    assert whoami(invented) == "invalid_api_key"
    # Behind the server's back the invented key becomes the account's development key
    # (the CLI makes only keys of its own): the server answers what it remembers.
    database = sqlite3.connect(keyway.database, timeout=10)
    with database:
        database.execute(
            "INSERT INTO secret_keys (id, account_id, environment, digest, hint, created_at, created_by)"
            " VALUES (?, ?, 'development', ?, ?, ?, 'test')",
            ("key_cachelimit000000001", account, hashlib.sha256(invented.encode()).digest(), "kw_dev_…" + invented[-4:],
             int(time.time() * 1000)),
        )
    database.close()
    assert whoami(invented) == "invalid_api_key", "an unknown key is remembered: asking again costs no query"
    # Two other unknown keys fill a cache of two and push the first out.
    for _ in range(2):
        assert whoami(well_formed_key()) == "invalid_api_key"
    assert whoami(invented) == 200, "forgotten as KEYWAY_KEY_CACHE_LIMIT=2 says, it was read from the store again"


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
    ("keys", "roll"): ["--environment", "development", "--grace", "1h"],
    ("keys", "list"): [],
    ("signing-keys", "rotate"): ["--environment", "development"],
    ("signing-keys", "list"): ["--environment", "development"],
    ("origins", "set"): ["--environment", "development", "https://app.example.com"],
    ("origins", "list"): [],
    ("limits", "set"): ["--environment", "development", "--requests-per-second", "none"],
    ("limits", "show"): [],
    ("audit", "export"): [],
    ("webhooks", "list"): [],
    ("webhooks", "add"): ["--environment", "development", "--url", "https://hooks.example.com/"],
    ("webhooks", "rotate-secret"): ["--endpoint", "we_nope"],
    ("webhooks", "enable"): ["--endpoint", "we_nope"],
    ("webhooks", "disable"): ["--endpoint", "we_nope"],
    ("webhooks", "remove"): ["--endpoint", "we_nope"],
    ("webhooks", "deliveries"): [],
    ("webhooks", "resend"): ["--delivery", "msg_nope"],
    ("members", "list"): [],
    ("members", "invite"): ["--email", "someone@example.com", "--role", "viewer"],
    ("members", "role"): ["--member", "someone@example.com", "--role", "viewer"],
    ("members", "remove"): ["--member", "someone@example.com"],
    ("members", "reset-two-factor"): ["--member", "someone@example.com"],
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


def test_audit_export_writes_json_lines_with_keys_only_by_hash(keyway):
    account = keyway.cli("accounts", "create", "--name", "Audit Ltd").stdout.strip()
    key = keyway.cli("keys", "generate", "--account", account, "--environment", "production").stdout.strip()
    keyway.cli("keys", "roll", "--account", account, "--environment", "production", "--grace", "1h")
    keyway.cli("limits", "set", "--account", account, "--environment", "development", "--requests-per-second", "5")
    keyway.cli("service-tokens", "create", "--name", "gateway")

    exported = keyway.cli("audit", "export", "--account", account)
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    # Newest first; the roll's two entries share its millisecond.
    assert lines[0]["event"] == "rate_limit.changed" and lines[-1]["event"] == "key.generated", lines
    assert sorted(line["event"] for line in lines) == ["key.generated", "key.generated", "key.rolled", "rate_limit.changed"], lines
    assert "Exported 4 audit entries." in exported.stderr
    digest = base64.b64encode(hashlib.sha256(key.encode()).digest()).decode()
    first = [line for line in lines if line["event"] == "key.generated" and line["hashedToken"] == digest]
    assert len(first) == 1 and first[0]["actor"] == "cli" and first[0]["resourceHint"].endswith(key[-4:])
    assert all(line["accountId"] == account and line["at"].endswith("Z") for line in lines)
    assert key not in exported.stdout

    later = keyway.cli("audit", "export", "--account", account, "--since", "2999-01-01T00:00:00Z")
    assert later.stdout == "" and "Exported 0 audit entries." in later.stderr
    operator = [json.loads(line) for line in keyway.cli("audit", "export", "--operator").stdout.splitlines()]
    assert [line["event"] for line in operator] == ["service_token.created"] and "accountId" not in operator[0]

    bad = keyway.cli("audit", "export", "--account", account, "--since", "yesterday", check=False)
    assert bad.returncode != 0 and "RFC 3339" in bad.stderr
    both = keyway.cli("audit", "export", "--account", account, "--operator", check=False)
    assert both.returncode != 0 and "not both" in both.stderr


def test_report_leak_revokes_a_key_read_from_standard_input(keyway):
    keyway.start()
    account = keyway.cli("accounts", "create", "--name", "Leaky Ltd").stdout.strip()
    key = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    assert keyway.request("GET", "/whoami", key)[0] == 200
    reported = keyway.cli("keys", "report-leak", "--url", "https://pastebin.example/abc", input=key + "\n")
    assert "Revoked kw_dev_…" + key[-4:] in reported.stdout and key not in reported.stdout
    # The running server refuses it within the revocation bound (plus 2 s for a noisy machine).
    deadline = time.monotonic() + 2.5
    while True:
        status, _, body = keyway.request("GET", "/whoami", key)
        if status == 401:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
    assert body["code"] == "revoked_api_key" and body["revocationReason"] == "leaked", body
    again = keyway.cli("keys", "report-leak", input=key + "\n")
    assert "already revoked" in again.stdout
    nonsense = keyway.cli("keys", "report-leak", input="not a key\n", check=False)
    assert nonsense.returncode != 0 and "not a Keyway key" in nonsense.stderr
    empty = keyway.cli("keys", "report-leak", input="", check=False)
    assert empty.returncode != 0 and "standard input" in empty.stderr
    leaks = [json.loads(line) for line in keyway.cli("audit", "export", "--account", account).stdout.splitlines()
             if json.loads(line)["event"] == "key.reported_leaked"]
    assert len(leaks) == 1 and leaks[0]["details"]["url"] == "https://pastebin.example/abc" and leaks[0]["actor"] == "cli"
