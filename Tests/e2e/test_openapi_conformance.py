"""Every endpoint's real responses, successes and errors, checked against the served OpenAPI document."""

import base64
import json
import re
import time

import jsonschema
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
import pytest
from openapi_spec_validator import validate as validate_spec

METHODS = {"get", "head", "post", "put", "patch", "delete", "options"}


class Contract:
    def __init__(self, document: dict):
        validate_spec(document)
        self.document = document
        self.covered: set[tuple[str, str, str]] = set()
        self.prefixes = [server["url"].rstrip("/") for server in document["servers"]]

    def operation(self, method: str, path: str):
        path = path.split("?")[0]
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if prefix and path.startswith(prefix + "/"):
                path = path[len(prefix):]
                break
        for template, item in self.document["paths"].items():
            pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
            if re.match(pattern, path) and method.lower() in item:
                return template, item[method.lower()]
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")

    def check(self, method: str, path: str, status: int, headers: dict, body):
        template, operation = self.operation(method, path)
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, which the document does not list: {body}"
        response = responses[str(status)]
        content = response.get("content", {})
        media = "application/json" if "application/json" in content else next(iter(content), None)
        if not content:
            assert body in ("", None), f"{method} {template} {status} should have no body: {body!r}"
        if media in ("application/json", "application/problem+json"):
            assert media in headers.get("Content-Type", ""), f"{method} {template} {status} is not {media}"
            # Local $refs ("#/components/...") resolve against this root.
            schema = dict(content[media]["schema"])
            validator = jsonschema.Draft202012Validator(
                {**schema, "components": self.document["components"]},
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
            errors = sorted(validator.iter_errors(body), key=str)
            assert not errors, f"{method} {template} {status}: {errors[0].message} in {body}"
        for name in response.get("headers", {}):
            if name.lower() in ("x-request-id", "x-api-version", "www-authenticate", "retry-after"):
                assert any(h.lower() == name.lower() for h in headers), f"{method} {template} {status} lacks header {name}"
        self.covered.add((template, method.lower(), str(status)))


@pytest.fixture
def contract(keyway):
    # The test is the trusted proxy: X-Forwarded-For names the client of a leak report.
    keyway.start(KEYWAY_EGRESS_IPS="203.0.113.7, 2001:db8::/32", KEYWAY_TRUSTED_PROXIES="127.0.0.1")
    status, _, document = keyway.request("GET", "/openapi.json")
    assert status == 200
    return Contract(document)


def test_every_endpoint_answers_as_documented(keyway, contract):
    # This test sends more than a default limit allows; the limited account below checks the 429s.
    account, dev, prod = keyway.account_with_keys(requests_per_second="none")
    _, other_dev, _ = keyway.account_with_keys("Globex", requests_per_second="none")
    _, limited, _ = keyway.account_with_keys("Limited", requests_per_second=1)

    def call(method, path, key=None, body=None, expect=None, raw=None, headers=None):
        status, response_headers, payload = keyway.request(method, path, key=key, body=body, raw=raw, headers=headers)
        contract.check(method, path, status, response_headers, payload)
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {payload}"
        return payload

    # Successes.
    user_id = call("POST", "/users", dev, {"username": "ada@example.com", "fullName": "Ada"}, 200)["userId"]
    call("POST", "/users/batch", dev, {"users": [{"username": "b1"}, {"username": "ada@example.com"}, {"username": "b1"}]}, 200)
    call("POST", "/users/batch", dev, {"users": [{"username": "b1"}, {"username": "ada@example.com"}]}, 409)
    # /users/batch is also the path of the user named "batch".
    call("POST", "/users", dev, {"username": "batch"}, 200)
    call("GET", "/users/batch", dev, expect=200)
    call("PUT", "/users/batch", dev, {"fullName": "Batch"}, 200)
    call("PUT", "/users/batch", dev, {"username": "b1"}, 409)
    call("PUT", "/users/batch", dev, {"fullName": "x\u0000"}, 400)
    call("PUT", "/users/batch", dev, raw=b'{"fullName": "' + b"y" * (5 * 1024 * 1024) + b'"}', expect=413)
    for method in ("GET", "PUT", "DELETE"):
        call(method, "/users/batch", "kw_dev_nope", {"fullName": "x"} if method == "PUT" else None, 401)
        call(method, "/users/batch", dev, {"fullName": "x"} if method == "PUT" else None, 400, headers={"x-api-version": "1999-01"})
    call("DELETE", "/users/batch", dev, expect=200)
    for method in ("GET", "PUT", "DELETE"):
        call(method, "/users/batch", dev, {"fullName": "x"} if method == "PUT" else None, 404)
    call("POST", "/2023-12/users/batch", dev, [{"username": "b2", "fullName": None}], 200)
    page = call("GET", "/users?limit=2", dev, expect=200)
    call("GET", f"/users?limit=2&cursor={page['nextCursor']}", dev, expect=200)
    call("GET", f"/users/{user_id}", dev, expect=200)
    call("GET", "/users/ada%40example.com", dev, expect=200, headers={"x-api-version": "2024-03"})
    call("GET", f"/2024-03/users/{user_id}", dev, expect=200)
    call("PUT", f"/users/{user_id}", dev, {"fullName": None}, 200)
    call("GET", "/whoami", prod, expect=200)
    call("GET", "/ip-addresses", expect=200)
    call("GET", "/healthz", expect=200)
    call("GET", "/readyz", expect=200)
    status, headers, text = keyway.request("GET", "/metrics")
    contract.check("GET", "/metrics", status, headers, text)
    assert "text/plain" in headers["Content-Type"]
    call("GET", "/openapi.json", expect=200)

    # Errors.
    call("GET", "/users", expect=401)
    call("GET", "/users", "kw_dev_nope", expect=401)
    call("GET", "/whoami", "kw_prod_" + "A" * 36, expect=401)
    call("GET", f"/users?api_key={dev}", expect=400)
    call("POST", "/users", dev, {"username": "ada@example.com"}, 409)
    call("POST", "/users", dev, raw=b"{not json", expect=400)
    call("POST", "/users", dev, raw=b'{"username": "x", "fullName": "' + b"y" * (5 * 1024 * 1024) + b'"}', expect=413)
    rejected = call("POST", "/users/batch", dev, {"users": [{"username": ""}, {"username": "fine"}]}, 400)
    assert rejected["code"] == "invalid_users" and [entry["index"] for entry in rejected["invalidUsers"]] == [0]
    call("POST", "/users/batch", dev, [{"username": f"u{i}"} for i in range(1001)], 400)
    call("GET", "/users?limit=0", dev, expect=400)
    call("GET", f"/users/{user_id}", prod, expect=404)
    call("GET", f"/users/{user_id}", other_dev, expect=404)
    call("PUT", "/users/b1", dev, {"username": "b2"}, 409)
    call("PUT", "/users/nobody", dev, {"fullName": "x"}, 404)
    call("PUT", f"/users/{user_id}", dev, {}, 400)
    call("DELETE", "/users/nobody", dev, expect=404)
    call("GET", "/ip-addresses", headers={"x-api-version": "1999-01"}, expect=400)
    call("GET", "/whoami", dev, headers={"x-api-version": "nope"}, expect=400)
    call("DELETE", f"/users/{user_id}", dev, expect=200)
    call("DELETE", f"/users/{user_id}", prod, expect=404)

    # User tokens: minted by the backend, used by the frontend, verifiable with the JWKS.
    minted = call("GET", "/users/b1/token", dev, expect=200)
    call("GET", "/me", headers={"Authorization": f"Bearer {minted['token']}"}, expect=200)
    call("GET", "/me", dev, expect=401)
    call("GET", "/me", expect=401)
    call("OPTIONS", "/me", headers={"Origin": "https://app.example"}, expect=204)
    call("GET", "/users/nobody/token", dev, expect=404)
    call("GET", "/users/b1/token", dev, headers={"x-api-version": "2001-01"}, expect=400)
    call("GET", "/users/b1/token", expect=401)
    call("GET", f"/.well-known/jwks.json?account={account}&environment=development", expect=200)
    call("GET", "/.well-known/jwks.json", expect=400)

    # Every API operation refuses a missing key and an unknown version.
    huge = b'{"username": "x", "fullName": "' + b"y" * (5 * 1024 * 1024) + b'"}'
    operations = [
        ("GET", "/users", None), ("POST", "/users", {"username": "z"}), ("POST", "/users/batch", [{"username": "z"}]),
        ("GET", "/users/b1", None), ("PUT", "/users/b1", {"fullName": "z"}), ("DELETE", "/users/b1", None), ("GET", "/whoami", None),
    ]
    for method, path, body in operations:
        call(method, path, body=body, expect=401)
        call(method, path, dev, body, headers={"x-api-version": "2001-01"}, expect=400)
    call("POST", "/users/batch", dev, raw=huge, expect=413)
    call("PUT", "/users/b1", dev, raw=huge, expect=413)

    # The platform's other services (with a service token) and proxies (with the client's key).
    token = keyway.cli("service-tokens", "create", "--name", "conformance").stdout.strip()
    assert call("POST", "/keys/verify", token, {"key": dev}, 200)["valid"] is True
    assert call("POST", "/keys/verify", token, {"key": "kw_dev_nope"}, 200)["code"] == "malformed_api_key"
    call("POST", "/keys/verify", token, raw=b"{not json", expect=400)
    call("POST", "/keys/verify", token, raw=b'{"key": "' + b"k" * (5 * 1024 * 1024) + b'"}', expect=413)
    call("POST", "/keys/verify", dev, {"key": dev}, 401)
    call("POST", "/keys/verify", body={"key": dev}, expect=401)
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"):
        call(method, "/auth", dev, expect=200)
        call(method, "/auth", "kw_dev_nope", expect=401)
        call(method, "/auth", dev, headers={"x-keyway-user-id": "nobody"}, expect=404)
        # Envoy's ext_authz appends the client's path to its path_prefix: the same answers.
        call(method, "/auth/workflows", dev, expect=200)
        call(method, "/auth/workflows", "kw_dev_nope", expect=401)
        call(method, "/auth/workflows", dev, headers={"x-keyway-user-id": "nobody"}, expect=404)

    # Over the limit, every key-authenticated operation answers 429 before its handler runs.
    call("GET", "/whoami", limited, expect=200)
    for template, item in contract.document["paths"].items():
        for method, operation in item.items():
            # /leaked-keys is limited per client address, not per key: below.
            if method in METHODS and "429" in operation["responses"] and template != "/leaked-keys":
                path = template.replace("{user}", "someone")
                body = {"username": "x"} if method in ("post", "put") else None
                call(method.upper(), path, limited, body, expect=429)

    # Leak reports, unsigned: GitHub's feedback, clear errors, a limit per client address.
    leaked_dev = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    feedback = call("POST", "/leaked-keys", body=[{"token": leaked_dev, "type": "keyway_api_key", "url": "https://github.com/a/b", "source": "content"}], expect=200)
    assert [item["label"] for item in feedback] == ["true_positive"]
    call("POST", "/leaked-keys", body={"token": "x"}, expect=400)
    call("POST", "/leaked-keys", raw=b"[" + b'{"token":"x"},' * 60_000 + b'{"token":"x"}]', expect=413)
    first, second = {"X-Forwarded-For": "198.51.100.1"}, {"X-Forwarded-For": "198.51.100.2"}
    statuses = [keyway.request("POST", "/leaked-keys", body=[], headers=first)[0] for _ in range(8)]
    assert 429 in statuses, statuses
    # Per client, not one limit for everyone: right after the first is refused, another is answered.
    call("POST", "/leaked-keys", body=[], headers=second, expect=200)
    time.sleep(2.1)  # both windows of the sliding counter behind
    call("POST", "/leaked-keys", body=[], headers=first, expect=200)
    while keyway.request("POST", "/leaked-keys", body=[], headers=first)[0] != 429:
        pass
    call("POST", "/leaked-keys", body=[], headers=first, expect=429)

    # /metrics behind a token: the only way to see its 401; and with GitHub's keys, leak
    # reports must be signed: one signed with a key pair made here revokes a key.
    signer = ec.generate_private_key(ec.SECP256R1())
    keys_file = keyway.workdir / "github-keys.json"
    public_pem = signer.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    keys_file.write_text(json.dumps({"public_keys": [{"key_identifier": "test-1", "key": public_pem, "is_current": True}]}))
    keyway.stop()
    keyway.start(KEYWAY_METRICS_TOKEN="metrics-token-0123456789", KEYWAY_GITHUB_SECRET_SCANNING_KEYS=str(keys_file))
    call("GET", "/metrics", expect=401)
    call("GET", "/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"}, expect=200)
    report = json.dumps([{"token": prod, "type": "keyway_api_key", "url": "https://github.com/a/b", "source": "content"}]).encode()
    call("POST", "/leaked-keys", raw=report, headers={"Content-Type": "application/json"}, expect=401)
    signature = base64.b64encode(signer.sign(report, ec.ECDSA(hashes.SHA256()))).decode()
    signed = {"Content-Type": "application/json", "Github-Public-Key-Identifier": "test-1", "Github-Public-Key-Signature": signature}
    assert [item["label"] for item in call("POST", "/leaked-keys", raw=report, headers=signed, expect=200)] == ["true_positive"]
    call("GET", "/whoami", prod, expect=401)

    documented = {
        (template, method)
        for template, item in contract.document["paths"].items()
        for method in item
        if method in METHODS
    }
    exercised = {(template, method) for template, method, _ in contract.covered}
    assert documented <= exercised, f"never exercised: {documented - exercised}"
    statuses = {(t, m, s) for t, item in contract.document["paths"].items() for m, op in item.items() if m in METHODS for s in op["responses"]}
    untested = {entry for entry in statuses - contract.covered if entry[2] not in ("503",)}
    assert not untested, f"documented responses never seen: {sorted(untested)}"
