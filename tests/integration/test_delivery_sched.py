"""Delivery scheduling under failure (issue 11): one dead route must not
starve a healthy one.

Two routes: dead.test goes to a black hole (a listener that accepts and
never says a word), everything else to a healthy aiosmtpd downstream.

* Per-destination concurrency ([route] max_deliveries, default the route's
  max_connections): the dead route's attempts hang, but they hold only their
  own slots, so the healthy route's mail is delivered meanwhile although the
  dead route's mail was queued first and [queue] max_deliveries is small.
* Dead-destination memory ([route] dead_after / dead_time, like Postfix
  qmgr's dead destinations): after dead_after failed connections the route's
  messages are deferred without connecting until dead_time has passed, then
  one connection probes it - so the black hole sees a bounded number of
  connections, not one per queued message and attempt.

No test measures speed: the bounds are counts (connections at the black
hole against the attempts made)."""

import re
import socket
import threading
import time

import pytest

from downstream import Downstream
from mxtest import free_port, make_message, scaled, wait_for

SENDER = "sender@client.example.net"


class BlackHole:
    """Accepts TCP connections on loopback, counts them, never answers."""

    def __init__(self):
        self.port = free_port()
        self.connections = 0
        self.lock = threading.Lock()
        self.conns = []
        self.stop_ev = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(128)
        self.lsock.settimeout(0.1)
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(c)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        self.thread.join(5)
        self.lsock.close()
        with self.lock:
            for c in self.conns:
                c.close()


def _extra(hole, good, dead_route=None, queue=None):
    dead = {"type": "smtp", "domains": "dead.test", "hosts": f"127.0.0.1:{hole.port}",
            "tls": "none", "connect_timeout": "2s", "command_timeout": "1m",
            "data_timeout": "5s", "max_connections": "2"}
    dead.update(dead_route or {})
    q = {"retry_schedule": "1s", "max_lifetime": "1h", "delay_warning_time": "0"}
    q.update(queue or {})
    return {"domains": {"accepted_domains": "example.test, dead.test"},
            "route dead": dead,
            "route default": {"type": "smtp", "hosts": f"127.0.0.1:{good.port}",
                              "tls": "none", "directory": None},
            "queue": q}


def _attempts(gw):
    """{queue id: attempts} from `mxgate queue list`."""
    out = gw.cli("queue", "list", check=True).stdout
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\S+) \S+ age=\S+ size=\S+ attempts=(\d+) ", out, re.M)}


def test_dead_route_does_not_starve_healthy_route(gateway):
    """[queue] max_deliveries = 3; the dead route (max_connections 2, so at
    most 2 messages in delivery) hangs for a minute per connection.  Its
    six messages come first; the healthy route's six are all delivered
    while the dead route's stay queued, and the black hole saw at most 2
    connections."""
    with BlackHole() as hole, Downstream() as good:
        gw = gateway(_extra(hole, good, queue={"max_deliveries": "3"}))
        dead_ids = [gw.send(SENDER, [f"d{i}@dead.test"], make_message(sender=SENDER)[0])
                    for i in range(6)]
        wait_for(lambda: hole.connections >= 1, scaled(10), what="a connection to the hole")
        sent = [make_message(sender=SENDER, subject=f"ok{i}") for i in range(6)]
        for i, (data, _) in enumerate(sent):
            gw.send(SENDER, [f"u{i}@example.test"], data)
        for _, marker in sent:
            wait_for(lambda: good.find(marker), scaled(20), what="healthy route delivery")
        wait_for(lambda: sorted(gw.queue_ids()) == sorted(dead_ids), scaled(10),
                 what="only the dead route's messages left")
        assert hole.connections <= 2, hole.connections
        log = gw.log_text()
        assert "status=bounced" not in log
        assert re.search(r"status=waiting destination=dead ", log), \
            "no message waited for a slot of the dead route"
        assert not [m for m in good.messages if m.mail_from in ("", "<>")]


def test_dead_destination_is_not_connected_per_message(gateway):
    """The black hole times out every connection after 1s.  After dead_after
    (2) failed connections the route is dead: its ten messages are deferred
    without connecting, and after dead_time one connection probes it.  By
    the time every message has been tried three times (30 attempts), the
    hole has seen no more than max_connections + one probe per dead_time."""
    dead_time = 3
    max_conn = 4
    with BlackHole() as hole, Downstream() as good:
        gw = gateway(_extra(hole, good, dead_route={
            "command_timeout": "1s", "max_connections": str(max_conn), "dead_after": "2",
            "dead_time": f"{dead_time}s"}))
        t0 = time.monotonic()
        ids = [gw.send(SENDER, [f"d{i}@dead.test"], make_message(sender=SENDER)[0])
               for i in range(10)]
        data, marker = make_message(sender=SENDER, subject="healthy")
        gw.send(SENDER, ["u@example.test"], data)
        wait_for(lambda: good.find(marker), scaled(20), what="healthy route delivery")
        wait_for(lambda: (lambda a: len(a) == 10 and min(a.values()) >= 3)(_attempts(gw)),
                 scaled(40), interval=0.2, what="three attempts of every dead-route message")
        with hole.lock:
            conns = hole.connections
        elapsed = time.monotonic() - t0
        attempts = sum(_attempts(gw).values())
        assert attempts >= 30
        bound = max_conn + 1 + int(elapsed / dead_time)
        assert conns <= bound, f"{conns} connections for {attempts} attempts in {elapsed:.1f}s"
        assert sorted(gw.queue_ids()) == sorted(ids)
        out = gw.cli("queue", "list", check=True).stdout
        assert "delivery temporarily suspended" in out, out
        log = gw.log_text()
        assert "status=dead" in log
        assert "status=bounced" not in log
