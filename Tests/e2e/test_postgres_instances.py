"""Several `keyway serve` processes on one PostgreSQL: revocation reaches every instance within a bound."""

import http.cookiejar
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from conftest import Keyway

BOUND_SECONDS = 1.0
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def postgres_url() -> str:
    url = os.environ.get("KEYWAY_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("KEYWAY_TEST_POSTGRES_URL is not set; scripts/test starts a PostgreSQL for CI")
        pytest.skip("no PostgreSQL (run scripts/test, which starts one)")
    return url


@pytest.fixture
def database_url():
    server = postgres_url()
    name = "keyway_e2e_" + uuid.uuid4().hex
    subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    yield server.rsplit("/", 1)[0] + "/" + name
    subprocess.run(["psql", server, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


@pytest.fixture
def instances(tmp_path, database_url):
    started = []

    def start(count, **env):
        for index in range(count):
            folder = tmp_path / f"instance{index}"
            folder.mkdir(exist_ok=True)
            instance = Keyway(folder)
            instance.start(KEYWAY_DATABASE_URL=database_url, KEYWAY_MASTER_KEY=MASTER_KEY, **env)
            started.append(instance)
        return started

    yield start
    for instance in started:
        instance.stop()


def wait_until_rejected(instances, key, deadline_seconds=10.0):
    """Seconds until every instance answers revoked_api_key for `key`."""
    start = time.monotonic()
    pending = set(range(len(instances)))
    while pending and time.monotonic() - start < deadline_seconds:
        for index in list(pending):
            status, _, body = instances[index].request("GET", "/whoami", key)
            if status == 401 and body.get("code") == "revoked_api_key":
                pending.discard(index)
        if pending:
            time.sleep(0.01)
    assert not pending, f"instances {sorted(pending)} still accept the revoked key after {deadline_seconds}s"
    return time.monotonic() - start


def cli(database_url, tmp_path, *args):
    helper = Keyway(tmp_path)
    return helper.cli(*args, KEYWAY_DATABASE_URL=database_url, KEYWAY_MASTER_KEY=MASTER_KEY)


def test_serve_refuses_an_unmigrated_database_and_migrate_fixes_it(tmp_path, database_url):
    helper = Keyway(tmp_path)
    no_master_key = helper.cli("serve", "--port", "0", check=False, KEYWAY_DATABASE_URL=database_url)
    assert no_master_key.returncode != 0 and "KEYWAY_MASTER_KEY is required" in no_master_key.stderr, no_master_key.stderr
    result = helper.cli("serve", "--port", "0", check=False, KEYWAY_DATABASE_URL=database_url, KEYWAY_MASTER_KEY=MASTER_KEY)
    assert result.returncode != 0 and "keyway migrate" in result.stderr, result.stderr
    # Two migrations at once: each migration is applied exactly once.
    env = helper.env(KEYWAY_DATABASE_URL=database_url)
    runs = [subprocess.Popen([str(helper.binary), "migrate"], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert sum(output.count("Applied migration") for output in outputs) == 6, outputs  # v1 to v6
    assert "up to date" in helper.cli("migrate", KEYWAY_DATABASE_URL=database_url).stdout


def test_a_regenerated_key_is_rejected_by_every_instance_within_the_bound(tmp_path, database_url, instances):
    cli(database_url, tmp_path, "migrate")
    account = cli(database_url, tmp_path, "accounts", "create", "--name", "Multi").stdout.strip()
    servers = instances(3)
    first = servers[0].request  # regenerate through instance 0's dashboard-free path: the CLI against the same database
    old = cli(database_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    for server in servers:
        assert server.request("GET", "/whoami", old)[0] == 200  # every instance has it cached as active

    cli(database_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development")
    elapsed = wait_until_rejected(servers, old)
    assert elapsed < BOUND_SECONDS, f"took {elapsed:.3f}s"

    # Kill one instance's LISTEN connection from the database side; the fallback keeps the bound.
    server_url = os.environ["KEYWAY_TEST_POSTGRES_URL"]
    current = cli(database_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    wait_until_rejected(servers, old)
    for server in servers:
        assert server.request("GET", "/whoami", current)[0] == 200
    database = database_url.rsplit("/", 1)[1]
    killed = subprocess.run(
        ["psql", server_url, "-tAc",
         f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'keyway-listener' AND datname = '{database}'"],
        check=True, capture_output=True, text=True).stdout.strip()
    assert int(killed) >= 1
    cli(database_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development")
    elapsed = wait_until_rejected(servers, current)
    assert elapsed < BOUND_SECONDS, f"took {elapsed:.3f}s with the listener down"
    assert any("revocation listener lost its connection" in line for server in servers for line in server.logs)


def test_concurrent_regenerates_through_two_instances_leave_one_active_key(tmp_path, database_url, instances):
    cli(database_url, tmp_path, "migrate")
    account = cli(database_url, tmp_path, "accounts", "create", "--name", "Race").stdout.strip()
    env = Keyway(tmp_path).env(KEYWAY_DATABASE_URL=database_url, KEYWAY_MASTER_KEY=MASTER_KEY)
    runs = [
        subprocess.Popen([str(Keyway(tmp_path).binary), "keys", "generate", "--account", account, "--environment", "production"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = [run.communicate(timeout=60)[0].strip() for run in runs]
    assert all(run.returncode == 0 for run in runs) and all(key.startswith("kw_prod_") for key in keys)
    servers = instances(2)
    time.sleep(0.5)
    accepted = [key for key in keys if servers[0].request("GET", "/whoami", key)[0] == 200]
    assert len(accepted) == 1
    assert servers[1].request("GET", "/whoami", accepted[0])[0] == 200
    listing = cli(database_url, tmp_path, "keys", "list", "--account", account).stdout
    assert listing.count(" active ") == 1


def test_readyz_follows_the_database(tmp_path, database_url, instances):
    cli(database_url, tmp_path, "migrate")
    server = instances(1)[0]
    assert server.request("GET", "/readyz")[0] == 200
    # Block new connections to this database and end the current ones: readiness fails, then recovers.
    server_url = os.environ["KEYWAY_TEST_POSTGRES_URL"]
    database = database_url.rsplit("/", 1)[1]
    subprocess.run(["psql", server_url, "-qc", f"ALTER DATABASE {database} ALLOW_CONNECTIONS false"], check=True)
    subprocess.run(["psql", server_url, "-qc", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"],
                   check=True, capture_output=True)
    deadline = time.monotonic() + 15
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = server.request("GET", "/readyz")[0]
        time.sleep(0.1)
    assert status == 503
    subprocess.run(["psql", server_url, "-qc", f"ALTER DATABASE {database} ALLOW_CONNECTIONS true"], check=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and status != 200:
        status = server.request("GET", "/readyz")[0]
        time.sleep(0.1)
    assert status == 200


def test_a_nul_byte_is_a_400_on_postgresql_not_a_500(tmp_path, database_url, instances):
    """PostgreSQL's text cannot hold U+0000 (22021): every boundary refuses it before a query does."""
    cli(database_url, tmp_path, "migrate")
    account = cli(database_url, tmp_path, "accounts", "create", "--name", "Nul").stdout.strip()
    [server] = instances(1)
    for path in (
        "/.well-known/jwks.json?account=a%00b&environment=development",
        f"/.well-known/jwks.json?account={account}%00&environment=development",
        "/dashboard/users?environment=development&q=a%00",
    ):
        status, _, body = server.request("GET", path)
        assert status == 400, (path, status, body)
    # The sign-in form: its CSRF cookie and token first, then an email holding a NUL.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(server.base + "/dashboard/signin").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf": csrf, "email": "owner@acme.test\x00", "password": "correct horse battery"}).encode()
    try:
        status = opener.open(urllib.request.Request(server.base + "/dashboard/signin", data=form)).status
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == 400
    assert not any(" error " in line for line in server.logs), server.logs
