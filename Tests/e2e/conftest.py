"""Fixtures for end-to-end tests: the real `keyway` binary, its CLI and a server on loopback."""

import json
import os
import random
import re
import resource
import signal
import string
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def keyway_binary() -> Path:
    path = Path(os.environ.get("KEYWAY_BIN", ROOT / ".build" / "debug" / "keyway"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build first (scripts/test does)")
    return path


class Keyway:
    """Runs the keyway CLI and server against one database in a temporary folder."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.binary = keyway_binary()
        self.database = workdir / "data" / "keyway.sqlite"
        self.process = None
        self.logs: list[str] = []
        self.port = None

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWAY_")}
        env["KEYWAY_DATABASE"] = str(self.database)
        env.update(extra)
        return env

    def cli(self, *args, check=True, input: str | None = None, **env) -> subprocess.CompletedProcess:
        """Runs `keyway ARGS…`; `input` is its standard input (otherwise none)."""
        result = subprocess.run(
            [str(self.binary), *args], cwd=self.workdir, env=self.env(**env), capture_output=True, text=True, timeout=60,
            input=input if input is not None else "",
        )
        if check and result.returncode != 0:
            raise AssertionError(f"keyway {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def start(self, open_files: int | None = None, **env):
        """Starts `keyway serve`; `open_files` lowers its open-file limit (`ulimit -n`)."""
        assert self.process is None

        def limit_open_files():
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--port", "0"],
            cwd=self.workdir,
            env=self.env(**{"KEYWAY_LOG_LEVEL": "debug", **env}),
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=limit_open_files,
        )
        found = threading.Event()

        def drain(stream):
            for line in stream:
                self.logs.append(line)
                match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                # The separate /metrics listener (KEYWAY_METRICS_ADDRESS) says so too, under its own label.
                if match and "keyway.metrics" not in line and not found.is_set():
                    self.port = int(match.group(1))
                    found.set()

        for stream in (self.process.stderr, self.process.stdout):
            threading.Thread(target=drain, args=(stream,), daemon=True).start()
        if not found.wait(60):
            self.stop()
            raise AssertionError("keyway serve did not start:\n" + "".join(self.logs))

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, key: str | None = None, body=None, headers: dict | None = None, raw: bytes | None = None):
        """Returns (status, headers, parsed JSON or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, response_headers, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, response_headers, payload = error.code, dict(error.headers), error.read()
        text = payload.decode()
        content_type = response_headers.get("Content-Type", "")
        return status, response_headers, (json.loads(text) if "json" in content_type and text else text)

    def account_with_keys(self, name="Acme", requests_per_second=None) -> tuple[str, str, str]:
        """An account with a key per environment; `requests_per_second` ("none", a number) sets
        both environments' rate limit, for tests that send more than the defaults allow."""
        account = self.cli("accounts", "create", "--name", name).stdout.strip()
        development = self.cli("keys", "generate", "--account", account, "--environment", "development").stdout.strip()
        production = self.cli("keys", "generate", "--account", account, "--environment", "production").stdout.strip()
        if requests_per_second is not None:
            for environment in ("development", "production"):
                self.cli("limits", "set", "--account", account, "--environment", environment,
                         "--requests-per-second", str(requests_per_second))
        return account, development, production


def well_formed_key() -> str:
    """A key with a valid checksum that no database holds: it passes the format check and must be looked up."""
    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
    body = "kw_dev_" + "".join(random.choice(alphabet) for _ in range(30))
    value, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits.append(alphabet[digit])
    return body + "".join(reversed(digits))


@pytest.fixture
def keyway(tmp_path):
    instance = Keyway(tmp_path)
    yield instance
    instance.stop()
