"""See bench/gateway. Requests through nginx's auth_request to Keyway: valid keys, refused keys,
a key over its rate limit, and the same nginx asking an ideal auth server (`return 204`), in one run."""

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
from conftest import Keyway  # noqa: E402
from gateway import Nginx, Upstream, config, free_port  # noqa: E402

LUA = """
local headers = {}
function init(args) headers["Authorization"] = args[1] end
request = function() return wrk.format("GET", "/v1/workflows", headers) end
"""


def wrk(port, key, seconds, connections, script):
    output = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}", "--", f"Bearer {key}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+\w+)", output).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rate, p99, int(non2xx.group(1)) if non2xx else 0


def time_wait(port):
    """Sockets in TIME-WAIT on connections to `port` (nginx → auth server)."""
    listing = subprocess.run(["ss", "-tanH", "state", "time-wait", f"( dport = :{port} )"], capture_output=True, text=True).stdout
    return len(listing.splitlines())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keyway-bench-gateway-"))
    script = work / "auth.lua"
    script.write_text(LUA)
    keyway = Keyway(work)
    keyway.start(KEYWAY_LOG_LEVEL="info")
    upstream = Upstream(record=False)
    # wrk sends thousands of requests a second with one key: no limit, except for the key that
    # measures refusals over the limit (1 a second: nearly every request is a 429).
    account, valid, _ = keyway.account_with_keys(requests_per_second="none")
    _, limited, _ = keyway.account_with_keys("Limited", requests_per_second=1)
    revoked = valid
    valid = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    time.sleep(1)
    nginx_port, ideal_port = free_port(), free_port()
    # The API is a server of the same nginx answering `return 200`: a Python upstream would be
    # the bottleneck, not Keyway. (`return` in `location /` itself would skip auth_request.)
    api_port = free_port()
    api = f"server {{ listen 127.0.0.1:{api_port}; access_log off; location / {{ return 200 ok; }} }}\n"
    nginx = Nginx(work / "nginx", config(keyway.port, api_port, nginx_port) + api, workers=1)
    ideal_config = config(keyway.port, api_port, ideal_port).replace("proxy_pass http://keyway/auth;", "return 204;")
    ideal = Nginx(work / "nginx-ideal", ideal_config + api.replace(str(api_port), str(free_port())), workers=1)
    nginx.start(nginx_port)
    ideal.start(ideal_port)
    scenarios = [
        ("valid key, auth_request → Keyway", nginx_port, valid),
        ("revoked key, auth_request → Keyway (401)", nginx_port, revoked),
        ("invented key, auth_request → Keyway (401)", nginx_port, "kw_dev_" + "A" * 36),
        ("key over its limit, auth_request → Keyway (429)", nginx_port, limited),
        ("valid key, auth_request → return 204", ideal_port, valid),
    ]
    results = {name: [] for name, _, _ in scenarios}
    waits = {name: [] for name, _, _ in scenarios}
    try:
        for _ in range(args.rounds):
            for name, port, key in scenarios:
                before = time_wait(keyway.port)
                rate, p99, refused = wrk(port, key, args.duration, args.connections, script)
                waits[name].append(time_wait(keyway.port) - before)
                results[name].append((rate, p99, refused))
                time.sleep(1)
    finally:
        nginx.stop()
        ideal.stop()
        upstream.stop()
        keyway.stop()
    lines = [
        f"bench/gateway {datetime.date.today()} — nginx {subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip()}, "
        f"{args.connections} connections, {args.duration}s × {args.rounds} rounds, keyway {os.environ.get('KEYWAY_BIN', 'debug')}",
    ]
    valid_rates = [r[0] for r in results[scenarios[0][0]]]
    for name, _, _ in scenarios:
        rates = [r[0] for r in results[name]]
        ratios = sorted(rate / base for rate, base in zip(rates, valid_rates))
        lines.append(
            f"{name:48} {sorted(rates)[len(rates) // 2]:9.0f} req/s  p99 {results[name][-1][1]:>8}  "
            f"ratio to valid {ratios[len(ratios) // 2]:.2f}  non-2xx {results[name][-1][2]}  "
            f"new TIME-WAIT to Keyway {sorted(waits[name])[len(waits[name]) // 2]}"
        )
    print("\n".join(lines))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"gateway-{datetime.date.today()}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
