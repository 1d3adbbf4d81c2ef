"""Webhooks end to end: a real receiver process verifies every delivery with `standardwebhooks`
(PyPI), and records the address each came from, which must be the published egress address."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from conftest import Keyway

EGRESS = "127.0.0.2"  # in the loopback range: bindable here, and not the receiver's own address
ALL_EVENTS = {
    "key.generated", "key.rolled", "key.revoked", "key.expiring", "key.leaked",
    "user.created", "user.updated", "user.deleted", "signing_key.rotated",
}


class Receiver:
    def __init__(self, folder: Path):
        self.secrets = folder / "secrets.json"
        self.log = folder / "deliveries.jsonl"
        self.secrets.write_text("{}")
        self.log.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "webhook_receiver.py"), str(self.secrets), str(self.log)],
            stdout=subprocess.PIPE, text=True,
        )
        self.port = int(self.process.stdout.readline())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def trust(self, path: str, secret: str):
        secrets = json.loads(self.secrets.read_text())
        secrets[path] = secret
        self.secrets.write_text(json.dumps(secrets))

    def deliveries(self, path: str | None = None) -> list[dict]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [line for line in lines if path is None or line["path"] == path]

    def wait_for(self, condition, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} within {timeout}s; received:\n" + "\n".join(
            f"{d['path']} {d['status']} {d['peer']} {d['body'][:120]}" for d in self.deliveries()))

    def stop(self):
        self.process.kill()
        self.process.wait()


@pytest.fixture
def receiver(tmp_path):
    instance = Receiver(tmp_path)
    yield instance
    instance.stop()


SERVER_ENV = {
    "KEYWAY_EGRESS_IPS": EGRESS,
    "KEYWAY_EGRESS_BIND": EGRESS,
    "KEYWAY_WEBHOOK_ALLOW_INSECURE": "1",
}


def add_endpoint(keyway: Keyway, receiver: Receiver, account: str, path: str, environment="development", events=None) -> str:
    args = ["webhooks", "add", "--account", account, "--environment", environment, "--url", receiver.url(path)]
    if events:
        args += ["--events", ",".join(events)]
    endpoint, secret = keyway.cli(*args, **SERVER_ENV).stdout.split()
    assert secret.startswith("whsec_")
    receiver.trust(path, secret)
    return endpoint


def types(deliveries) -> set[str]:
    return {json.loads(d["body"])["type"] for d in deliveries}


def test_every_event_type_is_delivered_signed_from_the_egress_address(keyway, receiver):
    keyway.start(**SERVER_ENV)
    account = keyway.cli("accounts", "create", "--name", "Acme").stdout.strip()
    add_endpoint(keyway, receiver, account, "/ok/all")
    production = add_endpoint(keyway, receiver, account, "/ok/production", environment="production")
    env = ["--account", account, "--environment", "development"]

    key = keyway.cli("keys", "generate", *env).stdout.strip()  # key.generated
    keyway.cli("limits", "set", *env, "--requests-per-second", "none")
    status, _, user = keyway.request("POST", "/users", key, {"username": "ada@example.com"})  # user.created
    assert status == 200
    assert keyway.request("PUT", f"/users/{user['userId']}", key, {"fullName": "Ada"})[0] == 200  # user.updated
    assert keyway.request("DELETE", f"/users/{user['userId']}", key)[0] in (200, 204)  # user.deleted
    rolled = keyway.cli("keys", "roll", *env, "--grace", "90s").stdout.strip()  # key.rolled, then key.expiring
    keyway.cli("signing-keys", "rotate", *env)  # signing_key.rotated
    receiver.wait_for(lambda: "key.expiring" in types(receiver.deliveries("/ok/all")), 15, "key.expiring")
    current = keyway.cli("keys", "generate", *env).stdout.strip()  # key.revoked (both), key.generated
    report = [{"token": current, "type": "keyway_api_key", "url": "https://github.com/acme/app/blob/main/.env", "source": "content"}]
    status, _, feedback = keyway.request("POST", "/leaked-keys", body=report)  # key.leaked
    assert status == 200 and feedback[0]["label"] == "true_positive"

    receiver.wait_for(lambda: types(receiver.deliveries("/ok/all")) >= ALL_EVENTS, 20, "every event type")
    deliveries = receiver.deliveries()
    assert all(d["verified"] for d in deliveries), "standardwebhooks verified every delivery"
    assert {d["peer"] for d in deliveries} == {EGRESS}, "every connection came from KEYWAY_EGRESS_BIND"
    assert receiver.deliveries("/ok/production") == [], "production's endpoint never hears of development"
    for delivery in deliveries:
        for secret in (key, rolled, current):
            assert secret not in delivery["body"], "never a key in a body"
        body = json.loads(delivery["body"])
        assert set(body) == {"type", "timestamp", "data"}
        assert body["data"]["accountId"] == account and body["data"]["environment"] == "development"
    # Each body is what the OpenAPI document's `webhooks` object says it is.
    _, _, document = keyway.request("GET", "/openapi.json")
    for delivery in deliveries:
        body = json.loads(delivery["body"])
        schema = document["webhooks"][body["type"]]["post"]["requestBody"]["content"]["application/json"]["schema"]
        jsonschema.validate(body, {**schema, "components": document["components"]}, cls=jsonschema.Draft202012Validator)
    revoked = [json.loads(d["body"])["data"] for d in deliveries if json.loads(d["body"])["type"] == "key.revoked"]
    assert {r["revocationReason"] for r in revoked} <= {"regenerated", "expired_after_roll"}
    listed = keyway.cli("webhooks", "list", "--account", account).stdout
    assert production in listed and "enabled" in listed


def test_a_failed_delivery_is_retried_with_the_same_id(keyway, receiver):
    keyway.start(**SERVER_ENV)
    account = keyway.cli("accounts", "create", "--name", "Acme").stdout.strip()
    add_endpoint(keyway, receiver, account, "/fail-once/a", events=["key.generated"])
    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    receiver.wait_for(lambda: len(receiver.deliveries("/fail-once/a")) >= 2, 20, "a retry after the 500")
    first, second = receiver.deliveries("/fail-once/a")[:2]
    assert (first["status"], second["status"]) == (500, 200)
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"], "a retry is the same message"
    waited = int(second["headers"]["webhook-timestamp"]) - int(first["headers"]["webhook-timestamp"])
    assert 3 <= waited <= 7, f"the schedule's second step is 5 s (with jitter): {waited}"
    assert first["verified"] and second["verified"] and {first["peer"], second["peer"]} == {EGRESS}
    listed = keyway.cli("webhooks", "deliveries", "--account", account).stdout
    assert "succeeded" in listed and "HTTP 200" in listed


def test_gone_disables_the_endpoint(keyway, receiver):
    keyway.start(**SERVER_ENV)
    account = keyway.cli("accounts", "create", "--name", "Acme").stdout.strip()
    gone = add_endpoint(keyway, receiver, account, "/gone/a", events=["key.generated"])
    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    receiver.wait_for(lambda: len(receiver.deliveries("/gone/a")) == 1, 15, "the first delivery")
    end = time.monotonic() + 10
    while "disabled" not in keyway.cli("webhooks", "list", "--account", account).stdout and time.monotonic() < end:
        time.sleep(0.1)
    listed = keyway.cli("webhooks", "list", "--account", account).stdout
    assert gone in listed and "410" in listed, listed
    keyway.cli("keys", "generate", "--account", account, "--environment", "development")
    time.sleep(2)
    assert len(receiver.deliveries("/gone/a")) == 1, "nothing more is sent to a disabled endpoint"


def test_nothing_acknowledged_is_lost_across_a_kill_mid_delivery(keyway, receiver):
    keyway.start(**SERVER_ENV)
    account = keyway.cli("accounts", "create", "--name", "Acme").stdout.strip()
    add_endpoint(keyway, receiver, account, "/slow/a", events=["user.created"])
    key = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    status, _, first = keyway.request("POST", "/users", key, {"username": "first@example.com"})
    assert status == 200
    receiver.wait_for(lambda: any(d["status"] == "held" for d in receiver.deliveries()), 15, "the first delivery in flight")
    status, _, second = keyway.request("POST", "/users", key, {"username": "second@example.com"})
    assert status == 200, "acknowledged: its event must arrive"
    keyway.process.send_signal(signal.SIGKILL)
    keyway.process.wait()
    keyway.process = None

    keyway.start(**SERVER_ENV)
    # The killed process's claims lapse (30 s), then the restarted one delivers both.
    def delivered(user) -> bool:
        return any(d["status"] == 200 and json.loads(d["body"])["data"]["userId"] == user["userId"] for d in receiver.deliveries())
    receiver.wait_for(lambda: delivered(first) and delivered(second), 60, "both users' events after the restart")
    assert all(d["verified"] and d["peer"] == EGRESS for d in receiver.deliveries())


def test_a_bind_address_that_is_not_published_is_refused(keyway):
    result = keyway.cli("serve", "--port", "0", check=False, KEYWAY_EGRESS_IPS="203.0.113.10", KEYWAY_EGRESS_BIND=EGRESS)
    assert result.returncode != 0
    assert "KEYWAY_EGRESS_BIND" in result.stderr and "KEYWAY_EGRESS_IPS" in result.stderr
