"""See bench/throttle. Floods sign-ins with distinct emails and client addresses and samples the server's memory."""

import argparse
import http.client
import os
import re
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "e2e"))
from conftest import Keyway  # noqa: E402


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1))


def client_address(index: int) -> str:
    # Half IPv4 (100.64.0.0/10), half IPv6, each IPv6 one in its own /64: every request a new client key.
    if index % 2 == 0:
        value = index // 2
        return f"100.{64 + (value >> 16) % 64}.{(value >> 8) & 255}.{value & 255}"
    return f"2001:db8:{(index >> 16) & 0xFFFF:x}:{index & 0xFFFF:x}::1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--entries", type=int, default=500, help="KEYWAY_THROTTLE_ENTRIES for the server")
    parser.add_argument("--step", type=int, default=500, help="sample memory every STEP requests")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="keyway-bench-throttle-"))
    server = Keyway(workdir)
    server.start(KEYWAY_LOG_LEVEL="info", KEYWAY_TRUSTED_PROXIES="127.0.0.1", KEYWAY_THROTTLE_ENTRIES=str(args.entries))
    try:
        status, headers, page = server.request("GET", "/dashboard/signin")
        cookie = headers["Set-Cookie"].split(";")[0]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        counter = iter(range(args.requests))
        lock = threading.Lock()
        statuses: dict[int, int] = {}
        samples: list[tuple[int, float, float]] = []
        done = 0
        start = time.monotonic()

        def sample():
            samples.append((done, rss_kib(server.process.pid) / 1024, time.monotonic() - start))

        sample()

        def worker():
            nonlocal done
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                body = urllib.parse.urlencode({"email": f"flood{index}@example.test", "password": "not the password", "csrf": csrf})
                connection.request(
                    "POST",
                    "/dashboard/signin",
                    body=body,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Cookie": cookie,
                        "X-Forwarded-For": f"203.0.113.7, {client_address(index)}",
                    },
                )
                response = connection.getresponse()
                response.read()
                with lock:
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    done += 1
                    if done % args.step == 0:
                        sample()

        threads = [threading.Thread(target=worker) for _ in range(args.connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        print(f"sign-in flood: {args.requests} requests, each a new email and a new client address (IPv4 or IPv6 /64)")
        print(f"KEYWAY_THROTTLE_ENTRIES={args.entries}, {args.connections} connections, binary {server.binary}")
        print(f"statuses: {dict(sorted(statuses.items()))}")
        print(f"{'requests':>9} {'RSS MiB':>8} {'seconds':>8}")
        for count, rss, seconds in samples:
            print(f"{count:>9} {rss:>8.1f} {seconds:>8.1f}")
        full = [rss for count, rss, _ in samples if count >= 2 * args.entries]
        if len(full) >= 2:
            print(f"after both tables are full ({2 * args.entries}+ requests): RSS {min(full):.1f}–{max(full):.1f} MiB "
                  f"(spread {max(full) - min(full):.1f} MiB over {samples[-1][0] - 2 * args.entries} more requests)")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
