"""The connection layer against slow and malformed clients, on real sockets.

Slow clients hold connections, and with them open files: without deadlines, 1 100 connections that
each send half a request head make /healthz time out for everyone under the usual limit of 1 024
open files, and a POST that promises 100 bytes and sends 3 stays open for ever.
"""

import re
import resource
import selectors
import socket
import time
import urllib.request

HEAD_TIMEOUT = 2
BODY_TIMEOUT = 2
SLOW_CLIENTS = 1100


def raw_connection(keyway) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", keyway.port), timeout=30)
    return connection


def read_until_closed(connection: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it did (inf if it did not)."""
    connection.settimeout(timeout)
    started = time.monotonic()
    received = b""
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return received, time.monotonic() - started
            received += chunk
    except (socket.timeout, TimeoutError):
        return received, float("inf")
    except ConnectionResetError:
        return received, time.monotonic() - started


def healthz(keyway, timeout: float) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(keyway.base + "/healthz", timeout=timeout) as response:
        assert response.status == 200
    return time.monotonic() - started


def test_slow_clients_are_closed_and_healthz_keeps_answering(keyway):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * SLOW_CLIENTS)), hard))
    keyway.start(
        open_files=1024,
        KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS=str(HEAD_TIMEOUT),
        KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        KEYWAY_LOG_LEVEL="info",
    )
    account, dev, _ = keyway.account_with_keys()

    # A POST that promises 100 bytes and sends 3.
    short_post = raw_connection(keyway)
    short_post.sendall(
        b"POST /users HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer " + dev.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"u"
    )

    # 1 100 connections that each send half a request head, then wait.
    selector = selectors.DefaultSelector()
    stuck = []
    for _ in range(SLOW_CLIENTS):
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setblocking(False)
        connection.connect_ex(("127.0.0.1", keyway.port))
        selector.register(connection, selectors.EVENT_WRITE)
        stuck.append(connection)
    half_head = b"GET /healthz HTTP/1.1\r\nHost: keyway\r\nX-Slow: "
    pending = len(stuck)
    closed_by_server = set()
    answers = []
    deadline = time.monotonic() + 60
    next_probe = time.monotonic()
    while (pending or len(closed_by_server) < SLOW_CLIENTS) and time.monotonic() < deadline:
        for key, events in selector.select(timeout=0.2):
            connection = key.fileobj
            if events & selectors.EVENT_WRITE:
                try:
                    connection.send(half_head)
                except OSError:
                    closed_by_server.add(connection)
                    selector.unregister(connection)
                    pending -= 1
                    continue
                pending -= 1
                selector.modify(connection, selectors.EVENT_READ)
            elif events & selectors.EVENT_READ:
                try:
                    data = connection.recv(4096)
                except OSError:
                    data = b""
                if not data or b"408" in data:
                    closed_by_server.add(connection)
                    selector.unregister(connection)
        if time.monotonic() >= next_probe:
            # /healthz answers all along, if only after the stuck connections ahead of it are closed.
            answers.append(healthz(keyway, timeout=3 * HEAD_TIMEOUT + 5))
            next_probe = time.monotonic() + 1

    assert len(closed_by_server) == SLOW_CLIENTS, f"{SLOW_CLIENTS - len(closed_by_server)} stuck connections were left open"
    assert answers and max(answers) < 3 * HEAD_TIMEOUT + 5, answers
    assert healthz(keyway, timeout=5) < 1

    # The short POST was answered 408 and closed once its body was overdue.
    response, closed_after = read_until_closed(short_post, timeout=BODY_TIMEOUT + 10)
    assert response.startswith(b"HTTP/1.1 408"), response
    assert closed_after != float("inf")
    for connection in stuck:
        connection.close()
    short_post.close()
    logs = "".join(keyway.logs)
    assert "request head not received in time" in logs
    assert not re.search(r"\berror\b.*request failed", logs), "a slow client is not a server error"


def test_a_connection_waiting_for_its_next_request_is_closed_after_the_idle_timeout(keyway):
    keyway.start(KEYWAY_IDLE_TIMEOUT_SECONDS="1")
    connection = raw_connection(keyway)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: keyway\r\n\r\n")
    response, closed_after = read_until_closed(connection, timeout=10)
    assert response.startswith(b"HTTP/1.1 200")
    assert closed_after < 5, "the idle connection was left open"


def malformed_post(keyway, dev: str, framing: bytes, body: bytes) -> bytes:
    connection = raw_connection(keyway)
    connection.sendall(
        b"POST /users HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer " + dev.encode()
        + b"\r\nContent-Type: application/json\r\n" + framing + b"\r\n" + body
    )
    # The client is done sending: the body ends here, whatever its framing promised.
    connection.shutdown(socket.SHUT_WR)
    response, _ = read_until_closed(connection, timeout=10)
    connection.close()
    return response


def test_a_body_that_ends_early_is_a_400_logged_at_notice(keyway):
    keyway.start()
    _, dev, _ = keyway.account_with_keys()
    response = malformed_post(keyway, dev, b"Content-Length: 100\r\n", b'{"username": "x')
    assert response.startswith(b"HTTP/1.1 400"), response
    assert_logged_at_notice(keyway)


def test_an_unsupported_transfer_encoding_is_a_400_logged_at_notice(keyway):
    keyway.start()
    _, dev, _ = keyway.account_with_keys()
    response = malformed_post(keyway, dev, b"Transfer-Encoding: gzip\r\n", b"hello")
    assert response.startswith(b"HTTP/1.1 400"), response
    assert_logged_at_notice(keyway)


def assert_logged_at_notice(keyway):
    time.sleep(0.2)
    lines = [line for line in keyway.logs if "request failed" in line or "malformed request" in line]
    assert lines, "".join(keyway.logs)
    assert all(" notice " in line for line in lines), lines
    assert not any(" error " in line for line in keyway.logs), [line for line in keyway.logs if " error " in line]


def dashboard_post(keyway, framing: bytes, body: bytes, finish: bool) -> bytes:
    """A sign-in form whose body breaks its framing; `finish` ends the client's side (EOF), else it waits."""
    connection = raw_connection(keyway)
    connection.sendall(
        b"POST /dashboard/signin HTTP/1.1\r\nHost: keyway\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + framing + b"\r\n" + body
    )
    if finish:
        connection.shutdown(socket.SHUT_WR)
    response, _ = read_until_closed(connection, timeout=BODY_TIMEOUT + 10)
    connection.close()
    return response


def test_a_dashboard_form_that_ends_early_is_a_400_logged_at_notice(keyway):
    keyway.start()
    response = dashboard_post(keyway, b"Content-Length: 100\r\n", b"email=a%40b.test&pass", finish=True)
    assert response.startswith(b"HTTP/1.1 400"), response
    assert_logged_at_notice(keyway)


def test_a_dashboard_form_whose_body_is_overdue_is_a_408_not_a_server_error(keyway):
    keyway.start(KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT))
    response = dashboard_post(keyway, b"Content-Length: 100\r\n", b"email=a", finish=False)
    assert response.startswith(b"HTTP/1.1 408"), response
    time.sleep(0.2)
    assert not any(" error " in line for line in keyway.logs), [line for line in keyway.logs if " error " in line]
