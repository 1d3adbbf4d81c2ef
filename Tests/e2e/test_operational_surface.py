"""The operational surface of the real process: /metrics kept private, key generations limited, and
a database that stops answering turned into 503s, never hung requests."""

import socket
import time
import urllib.error
import urllib.request

from conftest import Keyway, well_formed_key
from postgres_cluster import own_postgres  # noqa: F401 (fixture)

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
METRICS_TOKEN = "e2e-metrics-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_metrics_on_their_own_listener_with_a_token(keyway):
    port = free_port()
    keyway.start(KEYWAY_METRICS_ADDRESS=f"127.0.0.1:{port}", KEYWAY_METRICS_TOKEN=METRICS_TOKEN)
    metrics = f"http://127.0.0.1:{port}/metrics"
    assert get(keyway.base + "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"}) == 404, "not on the public listener"
    assert get(metrics) == 401
    assert get(metrics, {"Authorization": "Bearer not-the-token-at-all-000"}) == 401
    assert get(metrics, {"Authorization": f"Bearer {METRICS_TOKEN}"}) == 200
    assert get(f"http://127.0.0.1:{port}/healthz") == 404, "the metrics listener serves /metrics only"
    assert get(keyway.base + "/healthz") == 200
    assert keyway.stop() == 0
    assert METRICS_TOKEN not in "".join(keyway.logs)


def test_the_cli_says_clearly_when_the_generation_limit_is_reached(keyway):
    account = keyway.cli("accounts", "create", "--name", "Looper").stdout.strip()
    generate = ("keys", "generate", "--account", account, "--environment", "development")
    for _ in range(2):
        keyway.cli(*generate, KEYWAY_KEY_GENERATIONS_PER_MINUTE="2")
    refused = keyway.cli(*generate, check=False, KEYWAY_KEY_GENERATIONS_PER_MINUTE="2")
    assert refused.returncode != 0
    assert refused.stdout == "", "no key is printed"
    assert "generated 2 keys in the last 60 seconds" in refused.stderr and "Try again in" in refused.stderr, refused.stderr
    # Another environment has its own count.
    keyway.cli("keys", "generate", "--account", account, "--environment", "production", KEYWAY_KEY_GENERATIONS_PER_MINUTE="2")


def test_a_database_that_stops_answering_is_a_503_not_a_hung_request(tmp_path, own_postgres):
    cluster = own_postgres()
    cluster.start()
    env = {"KEYWAY_DATABASE_URL": cluster.url(), "KEYWAY_MASTER_KEY": MASTER_KEY}
    server = Keyway(tmp_path)
    server.cli("migrate", **env)
    account = server.cli("accounts", "create", "--name", "Frozen", **env).stdout.strip()
    key = server.cli("keys", "generate", "--account", account, "--environment", "development", **env).stdout.strip()
    server.start(KEYWAY_KEY_LOOKUP_TIMEOUT_MS="1000", **env)
    try:
        assert server.request("GET", "/whoami", key)[0] == 200
        cluster.freeze()  # connections stay open but nothing answers, as with a dead host
        for _ in range(3):
            started = time.monotonic()
            status, _, body = server.request("GET", "/whoami", well_formed_key())
            elapsed = time.monotonic() - started
            assert status == 503 and body["code"] == "service_unavailable", (status, body)
            assert elapsed < 4, f"answered after {elapsed:.1f}s"
        assert server.request("GET", "/whoami", key)[0] == 200, "a key in memory needs no database"
        cluster.thaw()
        deadline = time.monotonic() + 15
        while server.request("GET", "/whoami", well_formed_key())[0] != 401:
            assert time.monotonic() < deadline, "lookups did not recover once the database answered again"
            time.sleep(0.2)
    finally:
        cluster.thaw()
        server.process.kill()
        server.process.wait()
        server.process = None
