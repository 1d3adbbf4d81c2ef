"""Stopping is bounded even when PostgreSQL goes away: SIGTERM during a failover, or with a frozen server.

Each test runs its own PostgreSQL cluster, which it stops or freezes under a running
instance that holds unwritten last-used times.
"""

import re
import signal
import subprocess
import time

import pytest

from conftest import Keyway
from postgres_cluster import own_postgres  # noqa: F401 (fixture)

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SHUTDOWN_TIMEOUT = 3
ABANDONED = re.compile(r"usage\.abandoned=(\d+).*abandoned keys. last-used times")


@pytest.fixture
def busy_instance(tmp_path, own_postgres):
    """A server on its own cluster that has served key requests whose last-used times are not written yet."""
    cluster = own_postgres()
    cluster.start()
    url = cluster.url()
    helper = Keyway(tmp_path)
    env = {"KEYWAY_DATABASE_URL": url, "KEYWAY_MASTER_KEY": MASTER_KEY}
    helper.cli("migrate", **env)
    account = helper.cli("accounts", "create", "--name", "Failover", **env).stdout.strip()
    keys = [helper.cli("keys", "generate", "--account", account, "--environment", environment, **env).stdout.strip()
            for environment in ("development", "production")]
    server = Keyway(tmp_path / "server")
    server.workdir.mkdir()
    server.start(KEYWAY_USAGE_FLUSH_SECONDS="3600", KEYWAY_SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT), **env)
    # The README walk-through's traffic, in short: every key is used, so two last-used times wait in memory.
    for key in keys:
        assert server.request("GET", "/whoami", key)[0] == 200
        assert server.request("POST", "/users", key, {"username": "ada@example.com"})[0] == 200
        assert server.request("GET", "/users/ada@example.com", key)[0] == 200
    yield cluster, server
    cluster.thaw()
    if server.process is not None:
        server.process.kill()
        server.process.wait()
        server.process = None


def stop_within_deadline(server) -> tuple[int, float]:
    """SIGTERM; the exit code and how long the process took to exit."""
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=SHUTDOWN_TIMEOUT + 2)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        server.process = None
        raise AssertionError(f"still running {SHUTDOWN_TIMEOUT + 2}s after SIGTERM:\n" + "".join(server.logs[-30:]))
    elapsed = time.monotonic() - started
    server.process = None
    time.sleep(0.2)  # let the log readers catch up
    return code, elapsed


def abandoned(server) -> list[int]:
    return [int(match.group(1)) for line in server.logs if (match := ABANDONED.search(line))]


def test_sigterm_after_the_database_stopped_exits_within_the_deadline(busy_instance):
    cluster, server = busy_instance
    cluster.stop("fast")  # a failover: the server closes every connection
    code, elapsed = stop_within_deadline(server)
    assert code == 0, "nothing acknowledged was lost: last-used times are best effort"
    assert abandoned(server) == [2], "".join(server.logs[-30:])
    print(f"exited {elapsed:.2f}s after SIGTERM with the database stopped")


def test_sigterm_just_before_the_database_stops_exits_within_the_deadline(busy_instance):
    cluster, server = busy_instance
    server.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    cluster.stop("immediate")
    try:
        code = server.process.wait(timeout=SHUTDOWN_TIMEOUT + 2)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running after the deadline:\n" + "".join(server.logs[-30:]))
    server.process = None
    print(f"exited {time.monotonic() - started:.2f}s after SIGTERM with the database stopping")
    assert code == 0
    time.sleep(0.2)
    # Either the flush won the race (nothing abandoned) or it says how many it gave up.
    assert abandoned(server) in ([], [2]), "".join(server.logs[-30:])


def test_sigterm_with_a_frozen_database_exits_within_the_deadline(busy_instance):
    cluster, server = busy_instance
    cluster.freeze()  # connections stay open but nothing answers, as with a dead host
    code, elapsed = stop_within_deadline(server)
    assert code == 0
    assert abandoned(server) == [2], "".join(server.logs[-30:])
    print(f"exited {elapsed:.2f}s after SIGTERM with the database frozen")


def test_sigterm_with_the_database_up_writes_last_used_times(busy_instance):
    cluster, server = busy_instance
    code, elapsed = stop_within_deadline(server)
    assert code == 0 and abandoned(server) == []
    assert any("usage.recorded=2" in line for line in server.logs)
    print(f"exited {elapsed:.2f}s after SIGTERM with the database up")
    listing = subprocess.run(["psql", "-h", str(cluster.dir), "-p", str(cluster.port), "-U", "postgres", "-tAc",
                              "SELECT count(*) FROM secret_keys WHERE last_used_at IS NOT NULL"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert listing == "2"
