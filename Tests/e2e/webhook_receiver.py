"""A webhook receiver in its own process: verifies every delivery with the `standardwebhooks` library.

Usage: webhook_receiver.py SECRETS_FILE LOG_FILE. It prints its port on its first line, then
serves until killed. SECRETS_FILE is a JSON object of path -> secret (`whsec_…`), read on every
request, so a test can add endpoints while it runs. Each delivery is appended to LOG_FILE as one
JSON line: the path, the TCP peer's address, the headers, the body, whether the signature
verified, and the status answered.

How a path answers:
  /ok/…         200 once verified (400 when not)
  /fail-once/…  500 to a message's first attempt, then as /ok
  /gone/…       410
  /slow/…       holds a message's first attempt for 20 s (recorded as "held"), then as /ok
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secrets_file, log_file = sys.argv[1], sys.argv[2]
seen: set[str] = set()
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        headers = {name.lower(): value for name, value in self.headers.items()}
        with open(secrets_file) as file:
            secret = json.load(file).get(self.path)
        try:
            Webhook(secret).verify(body, headers)
            verified = True
        except (WebhookVerificationError, TypeError, ValueError):
            verified = False
        message = headers.get("webhook-id", "")
        with lock:
            first = message not in seen
            seen.add(message)
        status = 200 if verified else 400
        if self.path.startswith("/gone/"):
            status = 410
        elif self.path.startswith("/fail-once/") and first:
            status = 500
        elif self.path.startswith("/slow/") and first:
            # Recorded as held, never as answered: the sender may be gone when the answer leaves.
            self.record(body, headers, verified, "held")
            time.sleep(20)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.record(body, headers, verified, status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def record(self, body, headers, verified, status):
        line = json.dumps({
            "path": self.path, "peer": self.client_address[0], "headers": headers, "body": body,
            "verified": verified, "status": status,
        })
        with lock, open(log_file, "a") as file:
            file.write(line + "\n")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
