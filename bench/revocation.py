"""See bench/revocation. Times regenerate-response → rejection on every instance."""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "e2e"))
from conftest import Keyway  # noqa: E402

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--kill-listener", action="store_true", help="terminate every LISTEN connection first, to measure the polling fallback")
    options = parser.parse_args()

    server = os.environ["KEYWAY_TEST_POSTGRES_URL"]
    name = "keyway_bench_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {name}"], check=True)
    url = server.rsplit("/", 1)[0] + "/" + name
    env = {"KEYWAY_DATABASE_URL": url, "KEYWAY_MASTER_KEY": MASTER_KEY, "KEYWAY_LOG_LEVEL": "info"}
    work = Path(tempfile.mkdtemp(prefix="keyway-bench-"))
    helper = Keyway(work)
    helper.cli("migrate", **env)
    account = helper.cli("accounts", "create", "--name", "Bench", **env).stdout.strip()
    servers = []
    try:
        for index in range(options.instances):
            folder = work / f"instance{index}"
            folder.mkdir()
            instance = Keyway(folder)
            instance.start(**env)
            servers.append(instance)
        key = helper.cli("keys", "generate", "--account", account, "--environment", "development", **env).stdout.strip()
        samples = []
        for trial in range(options.trials):
            for instance in servers:
                assert instance.request("GET", "/whoami", key)[0] == 200
            if options.kill_listener:
                subprocess.run(["psql", server, "-qtAc",
                                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'keyway-listener' AND datname = '{name}'"],
                               check=True, capture_output=True)
            new_key = helper.cli("keys", "generate", "--account", account, "--environment", "development", **env).stdout.strip()
            answered = time.monotonic()
            pending = set(range(len(servers)))
            while pending:
                for index in list(pending):
                    if servers[index].request("GET", "/whoami", key)[0] == 401:
                        pending.discard(index)
                if time.monotonic() - answered > 10:
                    raise SystemExit(f"trial {trial}: instances {sorted(pending)} still accept the old key after 10 s")
            samples.append((time.monotonic() - answered) * 1000)
            key = new_key
            print(f"\rtrial {trial + 1}/{options.trials}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        for instance in servers:
            instance.stop()
        subprocess.run(["psql", server, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)

    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    mode = "listener killed before each trial (polling fallback)" if options.kill_listener else "LISTEN/NOTIFY"
    report = (
        f"revocation across {options.instances} instances, {options.trials} trials, {mode}\n"
        f"regenerate response -> old key rejected everywhere: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {samples[-1]:.1f} ms\n"
    )
    print(report, end="")
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (results / f"revocation-{stamp}{'-fallback' if options.kill_listener else ''}.txt").write_text(report)


if __name__ == "__main__":
    main()
