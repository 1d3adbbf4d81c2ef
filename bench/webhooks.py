"""See bench/webhooks. POST /users with and without a subscribed endpoint, and deliveries a second."""

import argparse
import datetime
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
from gateway import Nginx, free_port  # noqa: E402
from run import LUA, Store, StoreKeyway, wrk  # noqa: E402  (bench/run.py, beside this file)

TARGET = 0.90  # with webhooks / without
SEEDED = 10_000  # users of each account before the runs


def pending(store) -> int:
    sql = "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
    if store.kind == "postgres":
        out = subprocess.run(["psql", store.url, "-tAc", sql], capture_output=True, text=True, check=True).stdout
    else:
        out = subprocess.run(["sqlite3", str(store.path), sql], capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)


def bench_store(kind, options, report):
    work = Path(tempfile.mkdtemp(prefix=f"keyway-bench-webhooks-{kind}-"))
    store = Store(kind, work)
    env = {**store.env, "KEYWAY_WEBHOOK_ALLOW_INSECURE": "1", "KEYWAY_LOG_LEVEL": "info"}
    keyway = StoreKeyway(work, env)
    keyway.cli("migrate")
    receiver_port = free_port()
    receiver = Nginx(work / "receiver", f"server {{ listen 127.0.0.1:{receiver_port}; location / {{ return 204; }} }}")
    receiver.start(receiver_port)
    keys = {}
    for index, name in enumerate(("plain", "hooked")):
        account = keyway.cli("accounts", "create", "--name", name).stdout.strip()
        # Users already there, and on PostgreSQL the planner's statistics of them (seed analyzes):
        # without, a users table grown from empty is checked by sequential scans until autovacuum runs.
        store.seed(account, index * SEEDED, (index + 1) * SEEDED)
        keys[name] = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
        keyway.cli("limits", "set", "--account", account, "--environment", "development", "--requests-per-second", "none")
        if name == "hooked":
            keyway.cli("webhooks", "add", "--account", account, "--environment", "development",
                       "--url", f"http://127.0.0.1:{receiver_port}/keyway", "--events", "user.created")
    script = work / "create.lua"
    script.write_text(LUA["create"])
    results = {}
    try:
        # 1. The request path alone: the outbox row in the user's commit, delivery left to another
        #    instance (KEYWAY_WEBHOOK_DELIVERY=off), as a deployment with dedicated delivery instances runs.
        # 2. The same instance delivering too, on the same cores, flat out: the worst case.
        for mode, delivery in (("outbox", "off"), ("delivering", "on")):
            keyway.start(KEYWAY_WEBHOOK_DELIVERY=delivery)
            pairs = []
            for round in range(options.rounds):
                # Every run adds its users to the same tables: alternate which side goes first,
                # so neither always runs on the bigger database.
                runs = {}
                for name in (("plain", "hooked") if round % 2 == 0 else ("hooked", "plain")):
                    runs[name] = wrk(keyway.base, "/users", str(script), [f"Bearer {keys[name]}"], options.duration, options.connections)
                without, hooked = runs["plain"], runs["hooked"]
                pairs.append((without, hooked))
                print(f"  {kind:8} {mode:10} without {without['rps']:>7.0f}/s  with {hooked['rps']:>7.0f}/s  "
                      f"ratio {hooked['rps'] / without['rps']:.2f}", file=sys.stderr)
            if delivery == "off":
                keyway.stop()
                # Deliveries a second: the outbox the first part filled, drained by a delivering instance alone.
                waiting = pending(store)
                started = time.monotonic()
                keyway.start(KEYWAY_WEBHOOK_DELIVERY="on")
                while pending(store) > 0 and time.monotonic() - started < 900:
                    time.sleep(0.2)
                results["deliveries"] = (waiting, time.monotonic() - started)
                print(f"  {kind:8} drained {waiting} deliveries in {results['deliveries'][1]:.1f} s", file=sys.stderr)
            keyway.stop()
            results[mode] = pairs
    finally:
        keyway.stop()
        receiver.stop()
        store.drop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"{kind}: {options.connections} connections, {options.rounds} pairs of {options.duration}s runs of POST /users "
             "(without and with an endpoint subscribed to user.created, alternating which runs first)"]
    for mode, label in (("outbox", "outbox write only (delivery off)"), ("delivering", "delivering on the same cores")):
        pairs = results[mode]
        ratio = statistics.median(hooked["rps"] / without["rps"] for without, hooked in pairs)
        verdict = f"target >= {TARGET:.2f} {'ok' if ratio >= TARGET else 'MISSED'}" if mode == "outbox" else "(no target: see docs/BENCHMARKS.md)"
        lines.append(f"  {label:36} without {statistics.median(w['rps'] for w, _ in pairs):>7.0f}/s  "
                     f"with {statistics.median(h['rps'] for _, h in pairs):>7.0f}/s  ratio {ratio:.2f}  {verdict}")
    waiting, seconds = results["deliveries"]
    lines.append(f"  deliveries a second: {waiting / seconds:.0f} ({waiting} signed and posted to nginx `return 204` in {seconds:.1f} s, "
                 "from start-up to an empty outbox)")
    report.extend(lines + [""])
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args()
    report = [f"bench/webhooks {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"]
    for kind in (["sqlite", "postgres"] if options.store == "both" else [options.store]):
        bench_store(kind, options, report)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"webhooks-{datetime.datetime.now():%Y%m%d-%H%M%S}.txt").write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
