"""Rate limits set by the CLI reach a running server (SQLite), with the IETF fields and the 429."""
import time


def wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_limit_set_by_the_cli_reaches_a_running_server(keyway):
    keyway.start()
    account, development, production = keyway.account_with_keys()
    assert keyway.cli("limits", "show", "--account", account).stdout == (
        "development: 25 requests a second per key (default)\n"
        "production: 100 requests a second per key (default)\n"
    )
    status, headers, _ = keyway.request("GET", "/whoami", production)
    assert status == 200 and headers["RateLimit-Policy"] == '"default";q=100;w=1'

    assert keyway.cli("limits", "set", "--account", account, "--environment", "production",
                      "--requests-per-second", "2").stdout == "production: 2 requests a second per key\n"
    # The server reads the change within KEYWAY_REVOCATION_POLL_MS (250 ms).
    assert wait_for(lambda: keyway.request("GET", "/whoami", production)[1].get("RateLimit-Policy") == '"default";q=2;w=1')
    statuses = [keyway.request("GET", "/whoami", production) for _ in range(4)]
    refused = [(headers, body) for status, headers, body in statuses if status == 429]
    assert refused, [status for status, _, _ in statuses]
    headers, body = refused[0]
    assert headers["Content-Type"] == "application/problem+json"
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit"].startswith('"default";r=0;t=')
    assert body["code"] == "rate_limited" and body["status"] == 429 and body["violated-policies"] == ["default"]
    assert body["type"] == "https://iana.org/assignments/http-problem-types#quota-exceeded"
    assert production not in str(body)

    keyway.cli("limits", "set", "--account", account, "--environment", "production", "--requests-per-second", "none")
    assert wait_for(lambda: "RateLimit" not in keyway.request("GET", "/whoami", production)[1])
    assert all(keyway.request("GET", "/whoami", production)[0] == 200 for _ in range(30))
    assert keyway.cli("limits", "show", "--account", account).stdout.endswith("production: no limit\n")

    refused = keyway.cli("limits", "set", "--account", account, "--environment", "production",
                         "--requests-per-second", "lots", check=False)
    assert refused.returncode != 0 and "whole number of requests" in refused.stderr
