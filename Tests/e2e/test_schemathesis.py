"""Schemathesis over the served /openapi.json, with every check and every phase.

The OpenAPI document must say exactly what the server accepts and the server answer exactly
what the document says: any failure Schemathesis finds fails this test. The budget is bounded;
run a longer or differently seeded search with

    KEYWAY_SCHEMATHESIS_SECONDS=1800 KEYWAY_SCHEMATHESIS_SEED=random scripts/test

(or `python3 -m pytest Tests/e2e/test_schemathesis.py` after a build).
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest


def test_schemathesis_finds_no_failure_with_every_check_and_phase(keyway, tmp_path):
    if importlib.util.find_spec("schemathesis") is None:
        pytest.fail("schemathesis is not installed: scripts/bootstrap installs it")
    keyway.start(KEYWAY_EGRESS_IPS="203.0.113.7, 2001:db8::/32", KEYWAY_LOG_LEVEL="info")
    # Schemathesis sends as fast as it can with one key: no limit, or it meets 429s.
    _, development, _ = keyway.account_with_keys(requests_per_second="none")
    service_token = keyway.cli("service-tokens", "create", "--name", "schemathesis").stdout.strip()
    # The secret key everywhere but /keys/verify, which takes a service token instead.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'headers = {{ Authorization = "Bearer {development}" }}\n\n'
        f'[[operations]]\ninclude-path = "/keys/verify"\nheaders = {{ Authorization = "Bearer {service_token}" }}\n\n'
        # /auth answers every method by design (Envoy forwards the client's), and OpenAPI 3.1 has
        # no place to declare QUERY or PROPFIND: an undeclared method is not a 405 there.
        '[[operations]]\ninclude-path-regex = "^/auth"\nchecks.unsupported_method.enabled = false\n\n'
        # A report over 512 KiB (more than 1000 items, say) is refused before it is parsed, with the
        # 413 the document declares: a rejection, which Schemathesis's default list leaves out.
        '[[operations]]\ninclude-path = "/leaked-keys"\nchecks.negative_data_rejection.expected-statuses = '
        '["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]\n'
    )
    seed = os.environ.get("KEYWAY_SCHEMATHESIS_SEED", "20261129")
    seconds = os.environ.get("KEYWAY_SCHEMATHESIS_SECONDS", "240")
    command = [
        # The CLI's entry point, run by this Python whatever PATH holds.
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file", str(config),
        "run", f"{keyway.base}/openapi.json",
        "--url", keyway.base,
        # Every check is on by default; `--checks all` here would also override the per-operation
        # exception for /auth in the configuration file (the command line wins).
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-time", seconds,
        # One worker: CPython 3.11 can fail parsing in two threads at once (SystemError from ast.parse).
        "--workers", "1",
        "--no-color",
    ]
    if seed != "random":
        command += ["--seed", seed]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=int(seconds) + 300)
    output = result.stdout + result.stderr
    summary = [line for line in output.splitlines() if re.match(r"^=+ .* in [\d.]+s =+$", line)]
    cases = [line.strip() for line in output.splitlines() if re.search(r"\d+ generated", line)]
    print(f"seed {seed}: {cases[-1] if cases else ''} {summary[-1] if summary else output[-2000:]}")
    # A failing case's reproduction can carry a body of hundreds of kilobytes: show the report's
    # short lines (operation, check, status, message), which say what failed.
    report = "\n".join(line for line in output.splitlines() if len(line) < 400)
    assert result.returncode == 0, f"Schemathesis found failures (seed {seed}):\n{report[-20000:]}"
    assert summary and "failure" not in summary[-1] and "error" not in summary[-1], output[-5000:]
