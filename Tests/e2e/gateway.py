"""nginx in front of Keyway and a recording upstream, for the gateway test and bench/gateway.

The nginx configuration is docs/examples/nginx-keyway.conf, the one docs/gateway.md shows,
with only its addresses replaced; everything that would need root (pid, logs, temporary
files) goes into a temporary folder.
"""

import http.server
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "docs" / "examples" / "nginx-keyway.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A tiny API that records the headers of every request it receives and answers 200."""

    def __init__(self, record=True):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if record:
                    received.append({"method": self.command, "path": self.path, "headers": dict(self.headers.items())})
                body = b"upstream ok\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def config(keyway_port: int, api_port: int, listen_port: int, extra_locations: str = "") -> str:
    """The documented configuration with these addresses."""
    text = CONFIG.read_text()
    for documented, actual in (("127.0.0.1:8080", keyway_port), ("127.0.0.1:3000", api_port), ("127.0.0.1:8000", listen_port)):
        assert documented in text, documented
        text = text.replace(documented, f"127.0.0.1:{actual}")
    if extra_locations:
        text = text.rstrip().removesuffix("}") + extra_locations + "\n}\n"
    return text


class Nginx:
    """nginx run by this user, in the foreground, with its files in `workdir`."""

    def __init__(self, workdir: Path, http_block: str, workers: int = 1):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        temp = {name: workdir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir(exist_ok=True)
        (workdir / "nginx.conf").write_text(
            f"""daemon off;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
{http_block}
}}
"""
        )
        self.process = None

    def start(self, port: int):
        binary = nginx_binary()
        assert binary, "nginx is not installed"
        check = subprocess.run([binary, "-t", "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf"), "-e", str(self.workdir / "error.log")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen([binary, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf"), "-e", str(self.workdir / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError("nginx exited: " + self.process.stderr.read())
                time.sleep(0.05)
        raise AssertionError("nginx did not start listening")

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
