"""An independent verifier, PyJWT, checks a Keyway user token with nothing but the published JWKS."""

import jwt
import pytest


def test_pyjwt_verifies_a_keyway_token_with_only_the_jwks(keyway):
    account, dev, prod = keyway.account_with_keys()
    keyway.start(KEYWAY_PUBLIC_URL="http://keyway.example:8080", KEYWAY_USER_TOKEN_MINUTES="20")
    status, _, body = keyway.request("POST", "/users", dev, {"username": "frontend-user"})
    assert status == 200
    user_id = body["userId"]
    status, _, body = keyway.request("GET", f"/users/{user_id}/token", dev)
    assert status == 200, body
    token = body["token"]

    client = jwt.PyJWKClient(f"{keyway.base}/.well-known/jwks.json?account={account}&environment=development")
    signing_key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["ES256"], audience="keyway:user", issuer="http://keyway.example:8080")
    assert claims["sub"] == user_id
    assert claims["env"] == "development" and claims["acct"] == account
    assert claims["exp"] - claims["iat"] == 20 * 60

    # A token whose payload was changed does not verify, even with the right key.
    header, payload, signature = token.split(".")
    forged = ".".join([header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature])
    with pytest.raises(jwt.exceptions.PyJWTError):
        jwt.decode(forged, signing_key.key, algorithms=["ES256"], audience="keyway:user")

    # The other environment's JWKS cannot verify it.
    keyway.request("POST", "/users", prod, {"username": "frontend-user"})
    assert keyway.request("GET", "/users/frontend-user/token", prod)[0] == 200  # production now has a key of its own
    other = jwt.PyJWKClient(f"{keyway.base}/.well-known/jwks.json?account={account}&environment=production")
    with pytest.raises(jwt.exceptions.PyJWKClientError):
        other.get_signing_key_from_jwt(token)


def test_rotating_from_the_cli_keeps_old_tokens_verifiable(keyway):
    account, dev, _ = keyway.account_with_keys()
    keyway.start()
    assert keyway.request("POST", "/users", dev, {"username": "r"})[0] == 200
    old_token = keyway.request("GET", "/users/r/token", dev)[2]["token"]
    result = keyway.cli("signing-keys", "rotate", "--account", account, "--environment", "development")
    assert "New development signing key" in result.stdout
    new_token = keyway.request("GET", "/users/r/token", dev)[2]["token"]
    assert jwt.get_unverified_header(old_token)["kid"] != jwt.get_unverified_header(new_token)["kid"]
    client = jwt.PyJWKClient(f"{keyway.base}/.well-known/jwks.json?account={account}&environment=development", cache_jwk_set=False)
    for token in (old_token, new_token):
        key = client.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["ES256"], audience="keyway:user")
        status, _, body = keyway.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and body["username"] == "r"
    listing = keyway.cli("signing-keys", "list", "--account", account, "--environment", "development").stdout
    assert listing.count("active") == 1 and "retired" in listing


def test_the_master_key_file_is_created_once_with_a_warning(keyway):
    keyway.account_with_keys()
    keyway.start()
    master = keyway.database.parent / "master.key"
    assert master.exists() and (master.stat().st_mode & 0o777) == 0o600
    assert keyway.stop() == 0
    warnings = [line for line in keyway.logs if "master key" in line]
    assert len(warnings) == 1, warnings
    keyway.logs.clear()
    keyway.start()
    assert not [line for line in keyway.logs if "master key" in line], "an existing master key is used silently"


def test_origins_are_set_and_listed_from_the_cli(keyway):
    account, _, _ = keyway.account_with_keys()
    keyway.cli("origins", "set", "--account", account, "--environment", "development", "https://app.acme.test", "http://localhost:3000")
    listing = keyway.cli("origins", "list", "--account", account).stdout
    assert "development: https://app.acme.test http://localhost:3000" in listing
    assert "production: (none)" in listing
    bad = keyway.cli("origins", "set", "--account", account, "--environment", "development", "https://app.acme.test/path", check=False)
    assert bad.returncode != 0 and "not an origin" in bad.stderr
    credentials = keyway.cli("origins", "set", "--account", account, "--environment", "development", "https://me:pw@app.acme.test", check=False)
    assert credentials.returncode != 0 and "user name or password" in credentials.stderr


def test_origins_are_stored_as_browsers_send_them(keyway):
    """An origin typed with a default port or in capitals must still match the browser's Origin header."""
    account, _, _ = keyway.account_with_keys()
    keyway.cli("origins", "set", "--account", account, "--environment", "development", "HTTPS://App.Acme.test:443/", "http://localhost:80", "http://localhost:3000")
    listing = keyway.cli("origins", "list", "--account", account).stdout
    assert "development: https://app.acme.test http://localhost http://localhost:3000" in listing
    keyway.start()
    status, headers, _ = keyway.request("OPTIONS", "/me", headers={"Origin": "https://app.acme.test"})
    assert status == 204 and headers.get("Access-Control-Allow-Origin") == "https://app.acme.test"
