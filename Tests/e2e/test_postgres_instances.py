"""Several `keyway serve` processes on one PostgreSQL: revocation reaches every instance within its bound,
through LISTEN, a reconnect or polling, and racing regenerations leave one working key."""

import datetime
import http.client
import http.cookiejar
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from conftest import Keyway

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

    def start(count, database_url=database_url, **env):
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


def wait_until_rejected(instances, key, deadline_seconds):
    """Seconds until every instance answers revoked_api_key for `key`; fails past `deadline_seconds`."""
    start = time.monotonic()
    pending = set(range(len(instances)))
    while pending and time.monotonic() - start < deadline_seconds:
        for index in list(pending):
            status, _, body = instances[index].request("GET", "/whoami", key)
            if status == 401 and body.get("code") == "revoked_api_key":
                pending.discard(index)
        if pending:
            time.sleep(0.01)
    assert not pending, f"instances {sorted(pending)} still accept the revoked key after {deadline_seconds}s; the first one's log:\n" + "".join(
        line for line in instances[min(pending)].logs[-60:] if "[KeywayHTTP] request" not in line
    ) if pending else ""
    return time.monotonic() - start


def cli(database_url, tmp_path, *args):
    helper = Keyway(tmp_path)
    return helper.cli(*args, KEYWAY_DATABASE_URL=database_url, KEYWAY_MASTER_KEY=MASTER_KEY)


def psql(sql: str) -> str:
    """Runs `sql` as the superuser of the test cluster."""
    return subprocess.run(["psql", postgres_url(), "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


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
    assert sum(output.count("Applied migration") for output in outputs) == 14, outputs  # v1 to v14
    assert "up to date" in helper.cli("migrate", KEYWAY_DATABASE_URL=database_url).stdout


@pytest.fixture
def role_database(database_url):
    """The test's database owned by a role of its own, which the instances connect as, and the
    superuser's URL to it. `NOLOGIN` on the role then keeps the instances' listeners from
    reconnecting while their pools' open connections go on working."""
    database = database_url.rsplit("/", 1)[1]
    role = database
    psql(f"CREATE ROLE {role} LOGIN")
    psql(f"ALTER DATABASE {database} OWNER TO {role}")
    url = urllib.parse.urlsplit(database_url)
    role_url = url._replace(netloc=f"{role}@{url.hostname}:{url.port}").geturl()
    yield role_url, role, database_url
    psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql(f"DROP ROLE IF EXISTS {role}")


def kill_the_listeners(servers, role):
    """Ends every instance's LISTEN connection, keeps it from coming back, and waits until each instance knows."""
    psql(f"ALTER ROLE {role} NOLOGIN")
    killed = psql(
        f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'keyway-listener' AND usename = '{role}'"
    )
    assert int(killed) == len(servers), killed
    deadline = time.monotonic() + 30
    for server in servers:
        while not any("revocation listener lost its connection" in line for line in server.logs):
            assert time.monotonic() < deadline, "an instance did not notice that its listener was gone"
            time.sleep(0.05)


def test_a_regenerated_key_is_rejected_by_every_instance_through_listen_and_after_a_reconnect(tmp_path, role_database, instances):
    role_url, role, superuser_url = role_database
    cli(role_url, tmp_path, "migrate")
    account = cli(role_url, tmp_path, "accounts", "create", "--name", "Multi").stdout.strip()
    old = cli(role_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    # Polling as slow as it can be set: only a notification, or the catch-up after a reconnect, meets the bounds below.
    servers = instances(3, KEYWAY_REVOCATION_POLL_MS="60000", database_url=role_url)
    for server in servers:
        assert server.request("GET", "/whoami", old)[0] == 200  # every instance has it cached as active

    current = cli(role_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    # The bound is about one notification round trip (bench/revocation: 7.4 ms at p99), plus 2 s for a noisy shared machine.
    wait_until_rejected(servers, old, deadline_seconds=2.0)
    for server in servers:
        assert server.request("GET", "/whoami", current)[0] == 200

    # Revoked while no listener can connect: each catches up once it is back. Its backoff is at most
    # 5 s; plus 2 s for a noisy shared machine.
    kill_the_listeners(servers, role)
    cli(superuser_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development")
    psql(f"ALTER ROLE {role} LOGIN")
    wait_until_rejected(servers, current, deadline_seconds=5.0 + 2.0)


def test_while_the_listeners_are_down_polling_keeps_the_bound(tmp_path, role_database, instances):
    role_url, role, superuser_url = role_database
    cli(role_url, tmp_path, "migrate")
    account = cli(role_url, tmp_path, "accounts", "create", "--name", "Fallback").stdout.strip()
    current = cli(role_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    poll_ms = 250
    servers = instances(3, KEYWAY_REVOCATION_POLL_MS=str(poll_ms), database_url=role_url)
    for server in servers:
        assert server.request("GET", "/whoami", current)[0] == 200

    # Every instance's listener is gone and stays gone, so only polling can tell them.
    kill_the_listeners(servers, role)
    cli(superuser_url, tmp_path, "keys", "generate", "--account", account, "--environment", "development")
    # The documented bound is KEYWAY_REVOCATION_POLL_MS plus one query; plus 2 s for a noisy shared machine.
    wait_until_rejected(servers, current, deadline_seconds=poll_ms / 1000 + 2.0)
    psql(f"ALTER ROLE {role} LOGIN")


class DashboardBrowser:
    """One browser signed in to one instance's dashboard (urllib and a cookie jar)."""

    def __init__(self, server):
        self.server = server
        self.jar = http.cookiejar.CookieJar()

    def open(self, path, fields=None) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        try:
            with opener.open(urllib.request.Request(self.server.base + path, data=data), timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def submit(self, form_page, path, fields) -> tuple[int, str]:
        """Posts `fields` with the CSRF token of the page the form was on."""
        csrf = re.search(r'name="csrf" value="([^"]+)"', self.open(form_page)[1]).group(1)
        return self.open(path, {**fields, "csrf": csrf})


def development_form(html: str) -> dict:
    """The hidden fields of the page's form that regenerates the development key."""
    form = html.split('action="/dashboard/settings/api-keys/development"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'type="hidden" name="(csrf|current)" value="([^"]+)"', form))


def revealed_key(html: str) -> str | None:
    match = re.search(r'id="development-key" class="secret" value="([^"]+)"', html)
    return match.group(1) if match else None


def test_concurrent_regenerates_through_two_instances_leave_one_working_key(tmp_path, database_url, instances):
    cli(database_url, tmp_path, "migrate")
    servers = instances(2)
    owner = {"email": "owner@race.test", "password": "correct horse battery"}
    first, second = DashboardBrowser(servers[0]), DashboardBrowser(servers[1])
    assert first.submit("/dashboard/signup", "/dashboard/signup", {**owner, "company": "Race"})[0] == 200
    assert second.submit("/dashboard/signin", "/dashboard/signin", owner)[0] == 200
    status, page = first.submit("/dashboard/settings/api-keys", "/dashboard/settings/api-keys/development", {"current": "none"})
    old = revealed_key(page)
    assert status == 200 and old, page
    for server in servers:
        assert server.request("GET", "/whoami", old)[0] == 200  # both have it cached as active

    # Each browser shows the same current key and submits the regenerate form three times at once:
    # two tabs and double-clicks, on two instances.
    forms = {browser: development_form(browser.open("/dashboard/settings/api-keys")[1]) for browser in (first, second)}
    assert forms[first]["current"] == forms[second]["current"] != "none"
    pages = []
    barrier = threading.Barrier(6)

    def regenerate(browser):
        barrier.wait()
        pages.append(browser.open("/dashboard/settings/api-keys/development", {**forms[browser], "confirm": "yes"}))

    threads = [threading.Thread(target=regenerate, args=(browser,)) for browser in (first, second) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(pages) == 6 and all(status == 200 for status, _ in pages), [status for status, _ in pages]
    shown = [key for key in (revealed_key(html) for _, html in pages) if key]
    assert len(shown) == 1, f"{len(shown)} keys shown; only one may be, the one that works"
    for server in servers:
        assert server.request("GET", "/whoami", shown[0])[0] == 200
    wait_until_rejected(servers, old, deadline_seconds=2.0)
    account = servers[0].request("GET", "/whoami", shown[0])[2]["accountId"]
    listing = cli(database_url, tmp_path, "keys", "list", "--account", account).stdout
    assert listing.count(" active ") == 1, listing


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
    # The server's log says why it was not ready (the pool's last error), should this ever fail.
    assert status == 200, "".join(server.logs)[-8000:]


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


def test_three_instances_hold_one_rate_limit_together(instances, database_url, tmp_path):
    """A key limited to N a second sends 3N a second for ten seconds, a third to each of three
    `keyway serve` processes: between N and 1.1 N a second get through, the rest are 429."""
    limit, seconds = 30, 10
    cli(database_url, tmp_path, "migrate")
    servers = instances(3)
    account = cli(database_url, tmp_path, "accounts", "create", "--name", "Acme").stdout.strip()
    key = cli(database_url, tmp_path, "keys", "generate", "--account", account, "--environment", "production").stdout.strip()
    cli(database_url, tmp_path, "limits", "set", "--account", account, "--environment", "production",
        "--requests-per-second", str(limit))
    # Each instance reads the new limit at its next poll; wait until all three report it.
    deadline = time.monotonic() + 10
    for server in servers:
        while True:
            _, headers, _ = server.request("GET", "/whoami", key)
            if headers.get("RateLimit-Policy") == f'"default";q={limit};w=1':
                break
            assert time.monotonic() < deadline, headers
            time.sleep(0.05)
    time.sleep(1.5)  # the windows of the requests above slide out

    outcomes = {200: 0, 429: 0}
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def send(index):
        server = servers[index]
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        counts = {}
        for request in range(limit * seconds):
            delay = start + index / (limit * 3) + request / limit - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            connection.request("GET", "/whoami", headers={"Authorization": f"Bearer {key}"})
            response = connection.getresponse()
            response.read()
            counts[response.status] = counts.get(response.status, 0) + 1
        with lock:
            for status, count in counts.items():
                outcomes[status] = outcomes.get(status, 0) + count

    threads = [threading.Thread(target=send, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(seconds, time.monotonic() - start)
    per_second = outcomes[200] / elapsed
    report = f"{outcomes} in {elapsed:.2f} s: {per_second:.1f}/s through at a limit of {limit}/s"
    print(report)
    assert set(outcomes) == {200, 429}, report
    assert limit <= per_second <= limit * 1.1, report


def test_a_rolled_keys_grace_ends_at_the_same_moment_on_every_instance(tmp_path, database_url, instances):
    """`keys roll --grace` from another process: within the revocation bound every instance of three
    answers the old key with its end (`Keyway-Key-Expires`), both keys work until then, and from that
    moment on no instance accepts the old key, with nothing more to hear from the database."""
    cli(database_url, tmp_path, "migrate")
    account = cli(database_url, tmp_path, "accounts", "create", "--name", "Acme").stdout.strip()
    old = cli(database_url, tmp_path, "keys", "generate", "--account", account, "--environment", "production").stdout.strip()
    servers = instances(3)
    for server in servers:
        status, headers, _ = server.request("GET", "/whoami", old)  # every instance caches it as the current key
        assert status == 200 and "Keyway-Key-Expires" not in headers

    rolled = cli(database_url, tmp_path, "keys", "roll", "--account", account, "--environment", "production", "--grace", "8s")
    new = rolled.stdout.strip()
    assert new.startswith("kw_prod_") and new != old
    assert "keeps working until" in rolled.stderr

    # The bound is the revocation's: a notification round trip, plus 2 s for a noisy shared machine.
    ends = set()
    deadline = time.monotonic() + 2.0
    for server in servers:
        while True:
            status, headers, body = server.request("GET", "/whoami", old)
            assert status == 200, body
            if "Keyway-Key-Expires" in headers:
                assert body["expiresAt"] == headers["Keyway-Key-Expires"]
                ends.add(headers["Keyway-Key-Expires"])
                break
            assert time.monotonic() < deadline, "an instance did not learn of the roll within the bound"
            time.sleep(0.01)
        assert server.request("GET", "/whoami", new)[0] == 200
    assert len(ends) == 1, ends
    end = datetime.datetime.fromisoformat(ends.pop().replace("Z", "+00:00")).timestamp()

    # Until the end, both keys work everywhere; from the end, the old key nowhere.
    assert time.time() < end - 1, "the test machine is too slow to see the grace"
    for server in servers:
        assert server.request("GET", "/whoami", old)[0] == 200
    time.sleep(max(0, end - time.time()) + 0.005)
    for server in servers:
        status, headers, body = server.request("GET", "/whoami", old)
        assert status == 401 and body["code"] == "revoked_api_key", body
        assert body["revocationReason"] == "expired_after_roll"
        assert "Keyway-Key-Expires" not in headers
        assert server.request("GET", "/whoami", new)[0] == 200
