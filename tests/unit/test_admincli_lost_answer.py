"""tenant22: a change whose answer is lost (the gateway killed while it ran) may have been
made, and its claim (gateway.admin.once) refuses the very same bytes: the admin CLI says
so in one line (check, then run the command again: each run is signed anew), instead of
"cannot reach the admin API", which reads as "nothing happened"."""

from __future__ import annotations

import socket
import threading

import pytest

from ops.admincli import Unavailable, admin_request
from ops.localports import free_port


def _env(port: int) -> dict[str, str]:
    return {"TESSERA_ADMIN_URL": f"http://127.0.0.1:{port}",
            "TESSERA_ADMIN_ACCESS_KEY": "AK", "TESSERA_ADMIN_SECRET_KEY": "SK"}


def test_a_change_whose_answer_was_lost_says_it_may_have_been_made() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        server.settimeout(60)  # a client that never connects does not hold the thread

        def die_mid_change() -> None:  # reads the whole request, then dies unanswered
            conn, _ = server.accept()
            with conn:
                conn.settimeout(60)
                got = b""
                while not got.endswith(b'"acme"}'):
                    chunk = conn.recv(65536)
                    if not chunk:  # the client gave up first: stop, not spin on b""
                        return
                    got += chunk
        t = threading.Thread(target=die_mid_change, daemon=True)
        t.start()
        try:
            with pytest.raises(Unavailable, match="may or may not have been made.*signed "
                                                  "anew"):
                admin_request("POST", "/keys", {"tenant": "acme"}, env=_env(port))
        finally:
            t.join(timeout=60)
        assert not t.is_alive()
    # nothing listening: nothing was sent, so nothing was made
    with pytest.raises(Unavailable, match="cannot reach the admin API"):
        admin_request("POST", "/keys", {"tenant": "acme"}, env=_env(free_port()))
