"""Red team (issue 11): a bounce destination with a huge MX set.

A DSN goes to the sender's domain by MX; the sender (an attacker who got a
message of theirs bounced, e.g. one over the downstream's SIZE) publishes
many MX hosts (a 64 KB answer holds thousands) that all accept and never
greet.  Every one was tried in turn, each for the route's timeouts - one
attempt of one DSN held a [queue] max_deliveries slot for hours, and a few
such domains held them all, starving delivery to the downstream.  Like
Postfix (smtp_mx_address_limit = 5), one attempt tries a bounded number of
MX addresses; the rest waits for the next attempt."""

import socket
import threading

from downstream import Downstream, outbound_route, relay_extra
from mxtest import make_message, scaled, wait_for

SENDER = "alice@evil.test"
ADDR = "127.0.0.2"


class SilentServer:
    """Accepts on ADDR and never says a word; counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ADDR, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.stop.set()
        self.t.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_one_attempt_tries_a_bounded_number_of_mx_addresses(gateway):
    inbound = Downstream()
    inbound.rcpt_replies["nobody@example.test"] = ["550 5.1.1 no such user"]
    inbound.start()
    silent = SilentServer()
    try:
        route = outbound_route(silent.port)
        route.update({"connect_timeout": "1s", "command_timeout": "1s"})
        gw = gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]), "route outbound": route,
                      "queue": {"retry_schedule": "1h", "max_lifetime": "2h",
                                "delay_warning_time": "0"}})
        for i in range(12):
            gw.dns.add("evil.test", "MX", f"{10 + i} mx{i}.evil.test.")
            gw.dns.add(f"mx{i}.evil.test", "A", ADDR)
        data, _ = make_message(sender=SENDER, to="nobody@example.test")
        qid = gw.send(SENDER, ["nobody@example.test"], data)
        m = gw.wait_log(qid + r" status=dsn-queued kind=failed dsn_id=(\w+)", scaled(15))
        dsn_id = m.group(1)
        gw.wait_log(dsn_id + r" status=deferred attempts=1 ", scaled(40))
        n = len(silent.conns)
        assert 1 <= n <= 5, f"one attempt of one DSN connected to {n} silent MX addresses"
    finally:
        silent.close()
        inbound.stop()
