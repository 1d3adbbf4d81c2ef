"""`keyway service-tokens` and POST /keys/verify against the real binary."""

import os
import re
import stat
import time


def verify(keyway, token, key):
    return keyway.request("POST", "/keys/verify", token, {"key": key})


def test_service_tokens_are_shown_once_listed_by_hint_and_revoked_everywhere(keyway, tmp_path):
    keyway.start()
    account, development, _ = keyway.account_with_keys()
    token = keyway.cli("service-tokens", "create", "--name", "gateway").stdout.strip()
    assert re.fullmatch(r"kwst_[0-9A-Za-z]{36}", token)
    target = tmp_path / "billing.token"
    written = keyway.cli("service-tokens", "create", "--name", "billing", "--output", str(target))
    file_token = target.read_text().strip()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert file_token not in written.stdout and "kwst_…" + file_token[-4:] in written.stdout
    again = keyway.cli("service-tokens", "create", "--name", "other", "--output", str(target), check=False)
    assert again.returncode != 0 and "already exists" in again.stderr

    taken = keyway.cli("service-tokens", "create", "--name", "gateway", check=False)
    assert taken.returncode != 0 and "gateway" in taken.stderr and taken.stdout == ""
    bad_name = keyway.cli("service-tokens", "create", "--name", "no spaces", check=False)
    assert bad_name.returncode != 0 and "--name" in bad_name.stderr

    listing = keyway.cli("service-tokens", "list").stdout
    assert "gateway" in listing and "billing" in listing and "kwst_…" + token[-4:] in listing
    assert token not in listing and token[5:-4] not in listing

    status, _, answer = verify(keyway, token, development)
    # The key's first request: development's default limit, 25 a second, with 24 left.
    assert status == 200 and answer == {
        "valid": True, "accountId": account, "environment": "development", "keyHint": "kw_dev_…" + development[-4:],
        "rateLimit": {"limit": 25, "remaining": 24, "reset": 1},
    }
    assert verify(keyway, file_token, development)[0] == 200

    # Revoked from the command line, by name and by id: the running server refuses within the key bound.
    keyway.cli("service-tokens", "revoke", "--name", "gateway")
    billing_id = re.search(r"(svc_[0-9A-Za-z]{20})", [line for line in listing.splitlines() if "billing" in line][0]).group(1)
    keyway.cli("service-tokens", "revoke", "--id", billing_id)
    for revoked in (token, file_token):
        deadline = time.monotonic() + 2
        while verify(keyway, revoked, development)[0] != 401:
            assert time.monotonic() < deadline, "a revoked service token still works after 2 s"
            time.sleep(0.02)
        status, _, error = verify(keyway, revoked, development)
        assert error["code"] == "revoked_service_token"
    missing = keyway.cli("service-tokens", "revoke", "--name", "gateway", check=False)
    assert missing.returncode != 0 and "No active service token" in missing.stderr
    assert "revoked" in keyway.cli("service-tokens", "list").stdout
    logs = "".join(keyway.logs)
    assert token[5:-4] not in logs and file_token[5:-4] not in logs and development[7:-4] not in logs
