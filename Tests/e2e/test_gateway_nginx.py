"""The nginx configuration docs/gateway.md and the README show is the one the gateway tests run.

The scenarios themselves (valid, refused and revoked keys, the user context, the rate limit)
run through nginx, Traefik and Envoy alike in test_gateway_proxies.py.
"""

from gateway import CONFIG


def test_the_documented_configuration_is_the_tested_one():
    for document in (CONFIG.parent.parent / "gateway.md", CONFIG.parents[2] / "README.md"):
        assert CONFIG.read_text().strip() in document.read_text(), f"{document.name} must show docs/examples/nginx-keyway.conf verbatim"
