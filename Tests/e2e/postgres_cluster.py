"""A PostgreSQL cluster of a test's own, which the test may stop, kill, freeze or serve over TLS.

Unlike the shared server that scripts/test starts (KEYWAY_TEST_POSTGRES_URL), this one
lives and dies with the test. It needs PostgreSQL's server, which scripts/postgres installs.
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL's server is missing; scripts/test installs it")
        pytest.skip("PostgreSQL's server is missing (scripts/postgres installs it)")
    return Path(found[-1]).parent


class PostgresCluster:
    """initdb into a temporary folder; start, stop, freeze and remove on demand."""

    def __init__(self):
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="keyway-pgtest-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_owner: list[str] = []
        if os.getuid() == 0:
            # initdb refuses to run as root; the cluster belongs to Debian's postgres user.
            if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str, check=True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.as_owner, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} failed: {result.stdout}{result.stderr}")
        return result

    def write(self, name: str, content: str, mode=0o600) -> Path:
        """A file in the data folder, owned by the server's user (as its key must be)."""
        path = self.data / name
        path.write_text(content)
        os.chmod(path, mode)
        if self.as_owner:
            owner = pwd.getpwnam("postgres")
            os.chown(path, owner.pw_uid, owner.pw_gid)
        return path

    def start(self, *settings: str):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=localhost -c fsync=off -c synchronous_commit=off"
        for setting in settings:
            options += f" -c {setting}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def pids(self) -> list[int]:
        """The postmaster and every backend it forked."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid …; comm may hold spaces, so split after its closing parenthesis.
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                pass  # a process that just ended
        return [postmaster, *children]

    def freeze(self):
        """Stops every server process without closing a socket: connections hang, as on a dead host."""
        self._signal(signal.SIGSTOP)

    def thaw(self):
        self._signal(signal.SIGCONT)

    def _signal(self, number):
        for pid in self.pids():
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass  # a backend that just ended

    def url(self, host="127.0.0.1", database="postgres", **query) -> str:
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        return f"postgres://postgres@{host}:{self.port}/{database}{suffix}"

    def remove(self):
        self.thaw()
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres():
    """Yields a function that initialises a cluster (not started); every one is removed afterwards."""
    clusters = []

    def make() -> PostgresCluster:
        cluster = PostgresCluster()
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.remove()
