"""`tessera node drain --wait` rides out a brief admin API outage (review19c L7): a gateway
restarting answers 503 (or refuses connections) for a moment; the wait says so on stderr and
tries again with backoff, instead of ending with exit 1 while the drain goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ops.admincli import ENV_AK, ENV_SK, ENV_URL
from ops.localports import free_port

ROW = {"id": "n1", "zone": "az1", "address": "127.0.0.1:1", "role": "data", "weight": 1,
       "membership": "draining", "since": 1.0, "added": False, "state": "up", "shards": 0,
       "drain": {"drained": True, "moved": 3}}


class Gateway(BaseHTTPRequestHandler):
    """The admin API of a gateway that restarts once: the first progress read gets 503."""

    gets = 0

    def _send(self, code: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self._send(200, ROW)  # the drain request

    def do_GET(self) -> None:  # noqa: N802
        type(self).gets += 1
        if type(self).gets == 1:
            self._send(503, {"message": "restarting"})
        else:
            self._send(200, {"nodes": [ROW]})

    def log_message(self, *args: object) -> None:
        pass


def test_drain_wait_survives_a_gateway_restart() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, ENV_URL: f"http://127.0.0.1:{server.server_port}",
               ENV_AK: "AKIDEXAMPLE", ENV_SK: "secret"}
        r = subprocess.run([sys.executable, "-m", "ops.cli", "node", "drain", "n1", "--wait"],
                           env=env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert r.returncode == 0, r.stderr
    assert "HTTP 503" in r.stderr and "trying again in 1 s (for up to 60 s)" in r.stderr, \
        r.stderr
    assert "drained, holds no shard" in r.stderr, r.stderr
    assert Gateway.gets == 2
