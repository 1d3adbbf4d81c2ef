"""See bench/run. Drives each scenario with wrk and reports ratios against GET /healthz."""

import argparse
import datetime
import os
import random
import re
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "e2e"))
from conftest import Keyway  # noqa: E402

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
USER_EPOCH = 1_700_000_000
TARGETS = {"B": 0.90, "C": 0.60, "D": 0.50, "D-malformed": 0.90, "D-checksum": 0.90,
           "G": 0.90, "G-limit": 0.90, "H": 0.90, "H-limit": 0.90, "I": 0.90, "I-whoami": 0.90}
# Scenarios whose every request but the first of each second is meant to be refused (429).
OVER_LIMIT = {"I", "I-whoami"}
SQLITE_ONLY = {"C"}


def base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def fresh_key(prefix="kw_dev_") -> str:
    body = prefix + "".join(random.choice(BASE62) for _ in range(30))
    return body + base62(zlib.crc32(body.encode()), 6)


def bad_checksum() -> str:
    key = fresh_key()
    return key[:-1] + ("A" if key[-1] != "A" else "B")


LUA = {
    "plain": """
local headers = {}
function init(args) headers["Authorization"] = args[1] end
request = function() return wrk.format("GET", wrk.path, headers) end
""",
    "verify": """
local headers = { ["Content-Type"] = "application/json" }
local body = ""
function init(args) headers["Authorization"] = args[1]; body = string.format('{"key":"%s"}', args[2]) end
request = function() return wrk.format("POST", wrk.path, headers, body) end
""",
    "users": """
local headers = {}
local count = 0
function init(args) headers["Authorization"] = args[1]; count = tonumber(args[2]); math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
request = function() return wrk.format("GET", string.format("/users/%08x%016x", 1700000000, math.random(1, count)), headers) end
""",
    "keys": """
local keys = {}
local index = 0
function init(args)
  for line in io.lines(args[1]) do keys[#keys + 1] = line end
  index = math.random(1, #keys)
end
request = function()
  index = index % #keys + 1
  return wrk.format("GET", "/whoami", { ["Authorization"] = "Bearer " .. keys[index] })
end
""",
    "create": """
local headers = { ["Content-Type"] = "application/json" }
local counter = 0
local prefix = ""
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
function init(args) headers["Authorization"] = args[1]; prefix = string.format("%d-%d", id, os.time()) end
request = function()
  counter = counter + 1
  return wrk.format("POST", "/users", headers, string.format('{"username":"bench-%s-%d"}', prefix, counter))
end
""",
}


def wrk(base, path, script, args, duration, connections):
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, base + path, "--", *args]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def latency(label):
        value, unit = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return {"rps": rps, "p50": latency("50%"), "p99": latency("99%"), "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "requests": requests}


def memory(pid):
    """VmRSS counts the database pages SQLite has mapped (the OS's file cache, shared and reclaimable);
    RssAnon is the process's own memory."""
    return f"{rss_mib(pid, 'VmRSS'):.0f} ({rss_mib(pid, 'RssAnon'):.0f}) MiB"


def rss_mib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class StoreKeyway(Keyway):
    """Keyway whose CLI and server all use the bench's store (SQLite file or PostgreSQL database)."""

    def __init__(self, workdir, store_env):
        super().__init__(workdir)
        self.store_env = store_env

    def env(self, **extra):
        return super().env(**{**self.store_env, **extra})


class Store:
    def __init__(self, kind, work):
        self.kind = kind
        self.work = work
        self.env = {"KEYWAY_MASTER_KEY": MASTER_KEY, "KEYWAY_LOG_LEVEL": "info"}
        if kind == "postgres":
            server = os.environ["KEYWAY_TEST_POSTGRES_URL"]
            self.database = "keyway_bench_" + uuid.uuid4().hex[:12]
            subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {self.database}"], check=True)
            self.url = server.rsplit("/", 1)[0] + "/" + self.database
            self.env["KEYWAY_DATABASE_URL"] = self.url
        else:
            self.path = work / "data" / "keyway.sqlite"

    def seed(self, account, start, end):
        """Inserts users start..end-1 of the development environment in bulk."""
        if self.kind == "postgres":
            sql = (
                "INSERT INTO users (id, account_id, environment, username, full_name, created_at) "
                f"SELECT lpad(to_hex({USER_EPOCH}), 8, '0') || lpad(to_hex(i), 16, '0'), '{account}', 'development', 'user' || i, NULL, "
                f"{USER_EPOCH * 1000} FROM generate_series({start}, {end - 1}) AS i"
            )
            subprocess.run(["psql", self.url, "-qc", sql], check=True)
            # A bulk load leaves the planner without statistics until autovacuum runs; gather them now.
            subprocess.run(["psql", self.url, "-qc", "ANALYZE users"], check=True)
        else:
            sql = (
                f"WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i < {end - 1}) "
                "INSERT INTO users (id, account_id, environment, username, full_name, created_at) "
                f"SELECT printf('%08x%016x', {USER_EPOCH}, i), '{account}', 'development', 'user' || i, NULL, {USER_EPOCH * 1000} FROM n;"
            )
            subprocess.run(["sqlite3", str(self.path), sql], check=True)

    def drop(self):
        if self.kind == "postgres":
            subprocess.run(["psql", os.environ["KEYWAY_TEST_POSTGRES_URL"], "-qc", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"],
                           capture_output=True)


def bench_store(kind, options, report):
    work = Path(tempfile.mkdtemp(prefix=f"keyway-bench-{kind}-"))
    store = Store(kind, work)
    helper = Keyway(work)
    helper.cli("migrate", **store.env)
    account = helper.cli("accounts", "create", "--name", "Bench", **store.env).stdout.strip()
    key = helper.cli("keys", "generate", "--account", account, "--environment", "development", **store.env).stdout.strip()
    # Every scenario sends tens of thousands of requests a second with this one key: no limit,
    # or the development default (25/s) would measure 429s.
    helper.cli("limits", "set", "--account", account, "--environment", "development", "--requests-per-second", "none", **store.env)
    print(f"==> {kind}: rate limit of the bench key's environment set to none (keyway limits set … none)", file=sys.stderr)
    # POST /keys/verify is asked by a service, with a service token of its own.
    token = helper.cli("service-tokens", "create", "--name", "bench", **store.env).stdout.strip()
    # G and H again with the limit on: a limit wrk cannot reach (the CLI's maximum), so every
    # request is counted and none refused.
    limited = limited_key(helper, store, "Bench limited", 1_000_000)
    # I: 1 a second, so all but about one request a second is a 429.
    over = limited_key(helper, store, "Bench over", 1)
    print(f"==> {kind}: limits set: 1 000 000/s for the limit-on scenarios, 1/s for the over-the-limit ones", file=sys.stderr)
    store.seed(account, 1, 10_001)
    scripts = {}
    for name, source in LUA.items():
        scripts[name] = work / f"{name}.lua"
        scripts[name].write_text(source)
    fresh = work / "fresh-keys.txt"
    fresh.write_text("\n".join(fresh_key() for _ in range(300_000)) + "\n")
    malformed = work / "malformed-keys.txt"
    malformed.write_text("\n".join("kw_dev_" + "".join(random.choice(BASE62) for _ in range(20)) for _ in range(1000)) + "\n")
    checksum = work / "checksum-keys.txt"
    checksum.write_text("\n".join(bad_checksum() for _ in range(1000)) + "\n")

    bearer = f"Bearer {key}"
    scenarios = {
        "A": ("/healthz", "plain", [""]),
        "B": ("/whoami", "plain", [bearer]),
        "C": ("/users", "users", [bearer, "10000"]),
        "D": ("/whoami", "keys", [str(fresh)]),
        "D-malformed": ("/whoami", "keys", [str(malformed)]),
        "D-checksum": ("/whoami", "keys", [str(checksum)]),
        "E": ("/users", "create", [bearer]),
        "F": ("/users?limit=100", "plain", [bearer]),
        "G": ("/keys/verify", "verify", [f"Bearer {token}", key]),
        "G-limit": ("/keys/verify", "verify", [f"Bearer {token}", limited]),
        "H": ("/auth", "plain", [bearer]),
        "H-limit": ("/auth", "plain", [f"Bearer {limited}"]),
        "I": ("/auth", "plain", [f"Bearer {over}"]),
        "I-whoami": ("/whoami", "plain", [f"Bearer {over}"]),
    }

    server = Keyway(work)
    server.start(**store.env)
    base = server.base
    preflight(server, token, key, limited, over)
    if options.profile:
        try:
            profile(server, base, scenarios[options.profile], scripts, options)
        finally:
            server.stop()
            store.drop()
            shutil.rmtree(work, ignore_errors=True)
        return
    duration, connections, rounds = options.duration, options.connections, options.rounds
    idle_rss = memory(server.process.pid)
    results = {}
    baselines = {"10k": [], "1M": []}

    def run(label, path, script, args, phase="10k"):
        """Runs A then the scenario, `rounds` times; the scenario's ratio is the median of the pairs' ratios."""
        pairs = []
        for _ in range(rounds):
            baseline = wrk(base, "/healthz", str(scripts["plain"]), [""], duration, connections)
            result = wrk(base, path, str(scripts[script]), args, duration, connections)
            baselines[phase].append(baseline)
            pairs.append((baseline, result))
        summary = {field: statistics.median(result[field] for _, result in pairs) for field in ("rps", "p50", "p99")}
        summary["ratio"] = statistics.median(result["rps"] / baseline["rps"] for baseline, result in pairs)
        summary["spread"] = [result["rps"] / baseline["rps"] for baseline, result in pairs]
        summary["non2xx"] = sum(result["non2xx"] for _, result in pairs)
        summary["requests"] = sum(result["requests"] for _, result in pairs)
        results[label] = summary
        print(f"  {kind:8} {label:12} {summary['rps']:>9.0f} req/s  p50 {summary['p50']:6.2f} ms  p99 {summary['p99']:6.2f} ms"
              f"  ratio {summary['ratio']:.2f} (pairs: {', '.join(f'{r:.2f}' for r in summary['spread'])})"
              + (f"  ({summary['non2xx']} non-2xx)" if summary["non2xx"] and not label.startswith("D") else ""), file=sys.stderr)
        # A limit-on scenario that meets a 429 measures refusals, not the count.
        assert label in OVER_LIMIT or label.startswith("D") or summary["non2xx"] == 0, (label, summary["non2xx"])

    def baseline_summary(phase):
        runs = baselines[phase]
        summary = {field: statistics.median(run[field] for run in runs) for field in ("rps", "p50", "p99")}
        summary["ratio"] = 1.0
        return summary

    pairs = f"{rounds} pair{'s' if rounds != 1 else ''}"
    print(f"==> {kind}: 10k users, {pairs} of {duration}s runs per scenario", file=sys.stderr)
    for label in ["B", "C", "D", "D-malformed", "D-checksum", "E", "F", "G", "G-limit", "H", "H-limit", "I", "I-whoami"]:
        run("C@10k" if label == "C" else label, *scenarios[label])
    results = {"A": baseline_summary("10k"), **results}
    load_rss = memory(server.process.pid)

    print(f"==> {kind}: seeding to 1M users", file=sys.stderr)
    started = time.monotonic()
    store.seed(account, 10_001, 1_000_001)
    seed_seconds = time.monotonic() - started
    idle_rss_1m = memory(server.process.pid)
    run("C@1M", "/users", "users", [bearer, "1000000"], phase="1M")
    load_rss_1m = memory(server.process.pid)
    run("D@1M", "/whoami", "keys", [str(fresh)], phase="1M")
    results["A@1M"] = baseline_summary("1M")
    after_keys_rss = memory(server.process.pid)
    server.stop()
    store.drop()
    # A million users take half a gigabyte; nothing in here is needed afterwards.
    shutil.rmtree(work, ignore_errors=True)

    lines = [f"{kind}: {options.connections} connections, wrk -t2, {pairs} (A, scenario) of {duration}s runs; "
             "ratio = median of the pairs' ratios"]
    lines.append(f"  {'scenario':38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}  target")
    descriptions = {
        "A": "A  GET /healthz (baseline)", "B": "B  GET /whoami, valid key", "C@10k": "C  GET /users/{id}, 10k users",
        "D": "D  unknown well-formed keys", "D-malformed": "D  malformed keys", "D-checksum": "D  bad checksums",
        "E": "E  POST /users", "F": "F  GET /users?limit=100", "C@1M": "C  GET /users/{id}, 1M users", "A@1M": "A  GET /healthz (1M run)",
        "D@1M": "D  unknown keys again (memory bound)",
        "G": "G  POST /keys/verify, valid key", "G-limit": "G  the same, limit on, not reached",
        "H": "H  GET /auth, valid key", "H-limit": "H  the same, limit on, not reached",
        "I": "I  GET /auth over the limit (429)", "I-whoami": "I  GET /whoami over the limit (429)",
    }
    for label in ["A", "B", "C@10k", "D", "D-malformed", "D-checksum", "E", "F", "G", "G-limit", "H", "H-limit", "I", "I-whoami",
                  "C@1M", "A@1M", "D@1M"]:
        result = results[label]
        target_key = label.split("@")[0]
        target = TARGETS.get(target_key)
        if target is None:
            verdict = ""
        elif target_key in SQLITE_ONLY and kind != "sqlite":
            verdict = "(target is for SQLite)"
        else:
            verdict = f">= {target:.2f} {'ok' if result['ratio'] >= target else 'MISSED'}"
        lines.append(f"  {descriptions[label]:38} {result['rps']:>9.0f} {result['p50']:>8.2f} {result['p99']:>8.2f} "
                     f"{result['ratio']:>7.2f}  {verdict}")
    p99_ratio = results["C@1M"]["p99"] / results["C@10k"]["p99"]
    for label in sorted(OVER_LIMIT):
        refused = results[label]["non2xx"] / results[label]["requests"]
        lines.append(f"  {label}: {refused:.2%} of {results[label]['requests']:,} requests refused with 429")
    lines.append(f"  C p99 at 1M / at 10k: {p99_ratio:.2f} (target <= 1.50 {'ok' if p99_ratio <= 1.5 else 'MISSED'})")
    lines.append(f"  resident memory, VmRSS (anonymous): idle {idle_rss}; under load {load_rss}; at 1M users idle {idle_rss_1m}, "
                 f"under load {load_rss_1m}; after {results['D@1M']['requests']:,} more lookups of unknown keys {after_keys_rss}")
    lines.append(f"  bulk seeding of 990k users: {seed_seconds:.1f} s")
    report.extend(lines + [""])
    print("\n".join(lines))


def limited_key(helper, store, name, requests_per_second):
    """A development key of a new account whose development environment allows `requests_per_second`."""
    account = helper.cli("accounts", "create", "--name", name, **store.env).stdout.strip()
    key = helper.cli("keys", "generate", "--account", account, "--environment", "development", **store.env).stdout.strip()
    helper.cli("limits", "set", "--account", account, "--environment", "development", "--requests-per-second",
               str(requests_per_second), **store.env)
    return key


def preflight(server, token, key, limited, over):
    """One request of each new scenario, so a wrong setup fails here instead of being measured."""
    status, _, verdict = server.request("POST", "/keys/verify", token, {"key": key})
    assert status == 200 and verdict["valid"] and "rateLimit" not in verdict, (status, verdict)
    status, _, verdict = server.request("POST", "/keys/verify", token, {"key": limited})
    assert status == 200 and verdict["valid"] and verdict["rateLimit"]["limit"] == 1_000_000, (status, verdict)
    status, headers, _ = server.request("GET", "/auth", key)
    assert status == 200 and "RateLimit-Policy" not in headers, (status, headers)
    status, headers, _ = server.request("GET", "/auth", limited)
    assert status == 200 and headers["RateLimit-Policy"] == '"default";q=1000000;w=1', (status, headers)
    statuses = [server.request("GET", path, over)[0] for path in ("/auth", "/whoami", "/auth", "/whoami")]
    assert 429 in statuses and set(statuses) <= {200, 429}, statuses


def profile(server, base, scenario, scripts, options):
    """Records the server's call stacks under one scenario and prints where the time goes."""
    path, script, args = scenario
    data = Path(tempfile.mkdtemp(prefix="keyway-profile-")) / "perf.data"
    wrk(base, path, str(scripts[script]), args, 2, options.connections)  # warm up
    recorder = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(server.process.pid),
                                 "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    result = wrk(base, path, str(scripts[script]), args, options.duration, options.connections)
    recorder.send_signal(2)
    recorder.wait()
    print(f"==> {options.profile}: {result['rps']:.0f} req/s while recording; share of the server's samples, "
          "including callees (perf report --children):", file=sys.stderr)
    report = subprocess.run(["perf", "report", "-i", str(data), "--children", "--stdio", "-g", "none", "--sort", "sym",
                             "--percent-limit", "1"], capture_output=True, text=True).stdout
    demangled = subprocess.run(["swift", "demangle", "--simplified"], input=report, capture_output=True, text=True).stdout
    lines = [line[:160] for line in demangled.splitlines() if line.strip() and not line.startswith("#")]
    # The framework's frames (event loops, executors, socket writes) fill the top; Keyway's own come after.
    ours = [line for line in lines if re.search(r"Keyway|SQLitePointReader|SecretKey|Users|JSONWriter|Middleware|sqlite3_|"
                                                r"PostgresClient|BatchedLookup|JSONEncoder|JSONDecoder|JSONBody|RateLimit|"
                                                r"ServiceToken|KeyVerification|ForwardAuth|ErrorMapping|collect", line)]
    print("\n".join(lines[:15]) + "\n  …\n" + "\n".join(ours[: options.profile_lines]))
    shutil.rmtree(data.parent, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of (A, scenario) runs per scenario")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--profile", choices=["A", "B", "C", "D", "D-malformed", "D-checksum", "E", "F", "G", "G-limit", "H", "H-limit",
                                              "I", "I-whoami"],
                        help="record the server under one scenario with perf and print where the time goes, instead of benchmarking")
    parser.add_argument("--no-webhooks", action="store_true", help="skip the webhook runs (bench/webhooks) after each store's scenarios")
    parser.add_argument("--profile-lines", type=int, default=40, help="how many of Keyway's own lines of the profile to print")
    options = parser.parse_args()
    report = [f"Keyway bench/run, {datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores", ""]
    for kind in (["sqlite", "postgres"] if options.store == "both" else [options.store]):
        bench_store(kind, options, report)
        if not options.profile and not options.no_webhooks:
            # Issue 15's target: POST /users with a subscribed endpoint against without (bench/webhooks).
            import webhooks
            webhooks.bench_store(kind, argparse.Namespace(duration=5, rounds=options.rounds, connections=32), report)
    if options.profile:
        return
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"run-{datetime.datetime.now():%Y%m%d-%H%M%S}.txt").write_text("\n".join(report))


if __name__ == "__main__":
    main()
