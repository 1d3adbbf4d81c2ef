"""`sslmode` in KEYWAY_DATABASE_URL behaves as libpq documents, against a PostgreSQL that only accepts TLS.

The CA and the server's certificate (naming only `localhost`) are made with openssl
in a temporary folder for each run; nothing is committed.
"""

import subprocess
import time

import pytest

from conftest import Keyway
from postgres_cluster import own_postgres  # noqa: F401 (fixture)

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PASSWORD = "s3cret-in-the-url"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=Keyway test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    return folder / f"{name}.crt"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    make_ca(folder, "ca")
    make_ca(folder, "other-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=folder)
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "server.ext", "-out", "server.crt", cwd=folder)
    return folder


@pytest.fixture
def tls_postgres(own_postgres, certificates):
    """A cluster with ssl=on whose pg_hba.conf accepts TCP connections over TLS only."""
    cluster = own_postgres()
    cluster.write("server.crt", (certificates / "server.crt").read_text())
    cluster.write("server.key", (certificates / "server.key").read_text())
    cluster.write("pg_hba.conf", "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n")
    cluster.start("ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key")
    return cluster


def migrate(tmp_path, url, **env):
    return Keyway(tmp_path).cli("migrate", check=False, KEYWAY_DATABASE_URL=url.replace("postgres@", f"postgres:{PASSWORD}@"), **env)


def assert_connected(result):
    assert result.returncode == 0 and "is up to date" in result.stdout, result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def assert_refused(result, *fragments):
    assert result.returncode != 0, result.stdout
    assert "Cannot connect to PostgreSQL at" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert PASSWORD not in result.stderr


def test_require_encrypts_without_checking_the_certificate(tmp_path, tls_postgres):
    assert_connected(migrate(tmp_path, tls_postgres.url(host="localhost", sslmode="require")))
    assert_connected(migrate(tmp_path, tls_postgres.url(host="127.0.0.1", sslmode="require")))


def test_without_sslmode_keyway_prefers_tls_as_libpq_does(tmp_path, tls_postgres):
    # The server accepts nothing but TLS, so connecting proves the default encrypts.
    assert_connected(migrate(tmp_path, tls_postgres.url(host="localhost")))
    assert_connected(migrate(tmp_path, tls_postgres.url(host="localhost", sslmode="prefer")))


def test_verify_full_connects_with_the_right_ca_and_host(tmp_path, tls_postgres, certificates):
    ca = str(certificates / "ca.crt")
    assert_connected(migrate(tmp_path, tls_postgres.url(host="localhost", sslmode="verify-full"), KEYWAY_DATABASE_CA_FILE=ca))
    assert_connected(migrate(tmp_path, tls_postgres.url(host="localhost", sslmode="verify-full", sslrootcert=ca)))


def test_verify_full_refuses_a_certificate_from_another_ca(tmp_path, tls_postgres, certificates):
    other = str(certificates / "other-ca.crt")
    for mode in ("verify-full", "verify-ca", "require"):  # require with a CA named checks the chain, as libpq does
        result = migrate(tmp_path, tls_postgres.url(host="localhost", sslmode=mode), KEYWAY_DATABASE_CA_FILE=other)
        assert_refused(result, f"sslmode={mode}", "CERTIFICATE_VERIFY_FAILED")


def test_verify_full_checks_the_host_name_and_verify_ca_does_not(tmp_path, tls_postgres, certificates):
    ca = str(certificates / "ca.crt")
    # The certificate names only localhost.
    assert_refused(migrate(tmp_path, tls_postgres.url(host="127.0.0.1", sslmode="verify-full"), KEYWAY_DATABASE_CA_FILE=ca),
                   "sslmode=verify-full", "does not name '127.0.0.1'")
    assert_connected(migrate(tmp_path, tls_postgres.url(host="127.0.0.1", sslmode="verify-ca"), KEYWAY_DATABASE_CA_FILE=ca))


def test_disable_is_refused_by_a_server_that_requires_tls(tmp_path, tls_postgres):
    assert_refused(migrate(tmp_path, tls_postgres.url(host="localhost", sslmode="disable")), "sslmode=disable", "no pg_hba.conf entry")


def test_an_unknown_sslmode_or_an_unreadable_ca_stops_the_command_at_once(tmp_path):
    # Nothing listens on port 9: the value is refused before any connection is tried.
    result = migrate(tmp_path, "postgres://postgres@127.0.0.1:9/keyway?sslmode=verify_full")
    assert result.returncode != 0
    assert "sslmode 'verify_full'" in result.stderr and "disable, prefer, require, verify-ca, verify-full" in result.stderr, result.stderr
    assert PASSWORD not in result.stderr
    result = migrate(tmp_path, "postgres://postgres@127.0.0.1:9/keyway?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt")
    assert result.returncode != 0 and "sslrootcert" in result.stderr and "/nonexistent/ca.crt" in result.stderr, result.stderr
    result = migrate(tmp_path, "postgres://postgres@127.0.0.1:9/keyway?sslmode=verify-full", KEYWAY_DATABASE_CA_FILE="/nonexistent/ca.crt")
    assert result.returncode != 0 and "KEYWAY_DATABASE_CA_FILE" in result.stderr, result.stderr


def test_the_server_and_its_listener_both_connect_with_verify_full(tmp_path, tls_postgres, certificates):
    ca = str(certificates / "ca.crt")
    url = tls_postgres.url(host="localhost", sslmode="verify-full")
    assert_connected(migrate(tmp_path, url, KEYWAY_DATABASE_CA_FILE=ca))
    server = Keyway(tmp_path)
    server.start(KEYWAY_DATABASE_URL=url, KEYWAY_DATABASE_CA_FILE=ca, KEYWAY_MASTER_KEY=MASTER_KEY)
    try:
        assert server.request("GET", "/readyz")[0] == 200
        query = ("SELECT a.application_name || ':' || s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                 "WHERE a.application_name LIKE 'keyway%' ORDER BY 1")
        deadline = time.monotonic() + 10
        rows: list[str] = []
        while time.monotonic() < deadline and "keyway-listener:true" not in rows:
            rows = subprocess.run(["psql", "-h", str(tls_postgres.dir), "-p", str(tls_postgres.port), "-U", "postgres", "-tAc", query],
                                  capture_output=True, text=True, check=True).stdout.split()
            time.sleep(0.1)
        assert "keyway-listener:true" in rows and "keyway:true" in rows, rows
        assert not any("revocation listener lost" in line for line in server.logs)
        assert any("database.sslmode=verify-full" in line for line in server.logs), server.logs
    finally:
        assert server.stop() == 0
