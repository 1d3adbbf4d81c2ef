"""See bench/cors. CORS preflights for /me at 10 and at 10 000 accounts, in one run.

The preflight carries no token, so it asks whether *any* environment allows the origin. Each size
gets its own database; each round measures 10 accounts (the baseline) then 10 000, back to back, and
the ratio reported is the median of the rounds' ratios, so the machine's noise moves both sides."""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "e2e"))
from conftest import Keyway  # noqa: E402
from run import Store, wrk  # noqa: E402

PREFLIGHT = """
local headers = { ["Access-Control-Request-Method"] = "GET", ["Access-Control-Request-Headers"] = "authorization" }
function init(args) headers["Origin"] = args[1] end
request = function() return wrk.format("OPTIONS", "/me", headers) end
"""


def seed_origins(store, accounts):
    """`accounts` accounts, each environment allowing two origins, in bulk (SQL, not the CLI)."""
    series = {
        "sqlite": f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {accounts}) ",
        "postgres": "",
    }[store.kind]
    source = {"sqlite": "FROM n", "postgres": f"FROM generate_series(1, {accounts}) AS i"}[store.kind]
    name = {"sqlite": "printf('acct_bench%06d', i)", "postgres": "'acct_bench' || lpad(i::text, 6, '0')"}[store.kind]
    statements = [
        f"{series}INSERT INTO accounts (id, name, created_at) SELECT {name}, 'Bench ' || i, 0 {source};",
        "INSERT INTO environments (account_id, name, created_at) SELECT id, e.name, 0 FROM accounts, "
        "(SELECT 'development' AS name UNION ALL SELECT 'production') AS e;",
        "INSERT INTO environment_origins (account_id, environment, position, origin) "
        "SELECT account_id, name, 0, 'https://' || account_id || '-' || name || '.example.test' FROM environments;",
        "INSERT INTO environment_origins (account_id, environment, position, origin) "
        "SELECT account_id, name, 1, 'http://localhost:3000' FROM environments;",
    ]
    if not has_origin_index(store):
        # A binary from before the index (KEYWAY_BIN=…), to compare: one newline-separated list per environment.
        statements[2:] = [
            "UPDATE environments SET allowed_origins = 'https://' || account_id || '-' || name || '.example.test' "
            "|| char(10) || 'http://localhost:3000';".replace("char(10)", "chr(10)" if store.kind == "postgres" else "char(10)")
        ]
    if store.kind == "postgres":
        subprocess.run(["psql", store.url, "-qc", "\n".join(statements) + " ANALYZE;"], check=True)
    else:
        subprocess.run(["sqlite3", str(store.path), "\n".join(statements)], check=True)


def has_origin_index(store) -> bool:
    query = {
        "sqlite": ["sqlite3", str(store.path), "SELECT count(*) FROM sqlite_master WHERE name = 'environment_origins'"],
        "postgres": ["psql", store.url if store.kind == "postgres" else "", "-tAc", "SELECT count(*) FROM pg_tables WHERE tablename = 'environment_origins'"],
    }[store.kind]
    return subprocess.run(query, check=True, capture_output=True, text=True).stdout.strip() == "1"


def serve(kind, accounts, work):
    store = Store(kind, work)
    Keyway(work).cli("migrate", **store.env)
    seed_origins(store, accounts)
    server = Keyway(work)
    server.start(**{**store.env, "KEYWAY_LOG_LEVEL": "info"})
    return store, server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args()
    kinds = ["sqlite", "postgres"] if options.store == "both" else [options.store]
    for kind in kinds:
        work = Path(tempfile.mkdtemp(prefix=f"keyway-bench-cors-{kind}-"))
        script = work / "preflight.lua"
        script.write_text(PREFLIGHT)
        servers = {}
        try:
            for accounts in (10, 10_000):
                (work / str(accounts)).mkdir()
                servers[accounts] = serve(kind, accounts, work / str(accounts))
            # Allowed (the last account's origin) and refused (no environment lists it: the whole scan, before the index).
            origins = {
                "allowed": lambda n: f"https://acct_bench{n:06d}-production.example.test",
                "refused": lambda n: "https://nobody.example.test",
            }
            print(f"== {kind}: OPTIONS /me, {options.connections} connections, {options.duration}s x {options.rounds} rounds")
            for case, origin in origins.items():
                ratios, rps = [], {10: [], 10_000: []}
                for _ in range(options.rounds):
                    measured = {}
                    for accounts in (10, 10_000):
                        result = wrk(servers[accounts][1].base, "/me", str(script), [origin(accounts)], options.duration, options.connections)
                        assert result["non2xx"] == 0, result
                        measured[accounts] = result
                        rps[accounts].append(result["rps"])
                    ratios.append(measured[10_000]["rps"] / measured[10]["rps"])
                print(
                    f"{case:8} 10 accounts {statistics.median(rps[10]):9.0f} req/s   "
                    f"10 000 accounts {statistics.median(rps[10_000]):9.0f} req/s   "
                    f"ratio {statistics.median(ratios):.2f} (10 000 / 10; 1.00 = no cost per account)"
                )
        finally:
            for store, server in servers.values():
                server.stop()
                store.drop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
