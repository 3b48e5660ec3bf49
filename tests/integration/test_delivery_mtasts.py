"""MTA-STS (RFC 8461) on the outbound route (tls = dane; no DNSSEC here, so
DANE never applies): bounces to sts.test, which publishes _mta-sts TXT and
serves its policy over HTTPS from mta-sts.sts.test (a loopback HTTPS server
with a test CA; the route's mta_sts_port / mta_sts_ca_file point at it).
mode: enforce makes a verified certificate and a listed MX host mandatory
(else the DSN is deferred); mode: testing delivers anyway, like tls = may.
"""

import http.server
import ssl
import threading

import pytest

import mxtest
from downstream import Downstream, dsns, outbound_route, relay_extra
from mxtest import make_message, scaled, wait_for

SENDER = "alice@sts.test"
ADDR = "127.0.0.2"


class PolicyServer:
    """HTTPS on ADDR serving /.well-known/mta-sts.txt with text/plain."""

    def __init__(self, ca, policy, hang=False):
        self.policy = policy
        self.requests = []
        self.hang = threading.Event() if hang else None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Host")))
                if outer.hang is not None:
                    outer.hang.wait(scaled(30))          # never answers in time
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                body = outer.policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((ADDR, 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ca.chain, ca.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._t.start()

    def close(self):
        if self.hang is not None:
            self.hang.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def policy(mode, mx="mx.sts.test"):
    return f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n"


@pytest.fixture
def ca(workdir):
    return mxtest.make_test_ca(workdir, hostnames=("mx.sts.test", "mta-sts.sts.test"), ips=(),
                               name="sts")


@pytest.fixture
def other_ca(workdir):
    """A certificate for mx.sts.test from a CA mxgate does not trust."""
    return mxtest.make_test_ca(workdir / "other", hostnames=("mx.sts.test",), ips=(),
                               name="rogue")


@pytest.fixture
def inbound():
    d = Downstream()
    d.local_domains = {"example.test"}
    d.rcpt_replies["nobody@example.test"] = ["550 5.1.1 no such user"]
    d.start()
    yield d
    d.stop()


@pytest.fixture
def world(gateway, inbound, ca):
    made = []

    def make(mode, mx_ca, mx_in_policy="mx.sts.test", hang=False):
        web = PolicyServer(ca, policy(mode, mx_in_policy), hang=hang)
        mx = Downstream(host=ADDR, tls=mx_ca).start()
        made.extend([web, mx])
        route = outbound_route(mx.port, tls="dane")
        route.update({"mta_sts_port": str(web.port), "mta_sts_ca_file": ca.ca_cert})
        gw = gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]), "route outbound": route})
        gw.dns.add("_mta-sts.sts.test", "TXT", '"v=STSv1; id=20261202a"')
        gw.dns.add("mta-sts.sts.test", "A", ADDR)
        gw.dns.add("sts.test", "MX", "10 mx.sts.test.")
        gw.dns.add("mx.sts.test", "A", ADDR)
        return gw, web, mx
    yield make
    for x in made:
        x.close() if isinstance(x, PolicyServer) else x.stop()


def bounce_one(gw):
    data, _ = make_message(sender=SENDER, to="nobody@example.test")
    qid = gw.send(SENDER, ["nobody@example.test"], data)
    m = gw.wait_log(qid + r" status=dsn-queued kind=failed dsn_id=(\w+)", scaled(15))
    return m.group(1)


def test_enforce_with_valid_certificate_delivers(world, ca):
    gw, web, mx = world("enforce", ca)
    dsn_id = bounce_one(gw)
    wait_for(lambda: dsns(mx), scaled(15), what="the DSN under MTA-STS enforce")
    assert dsns(mx)[0].tls
    assert web.requests == [("/.well-known/mta-sts.txt", "mta-sts.sts.test")]
    log = gw.log_text()
    assert "mta-sts domain=sts.test status=policy mode=enforce max_age=86400 id=20261202a" in log
    gw.wait_log(dsn_id + r" to=<alice@sts.test> route=outbound relay=mx\.sts\.test.* status=sent")


def test_enforce_with_untrusted_certificate_defers(world, other_ca):
    gw, web, mx = world("enforce", other_ca)
    dsn_id = bounce_one(gw)
    gw.wait_log(dsn_id + r" status=deferred", scaled(15))
    assert "certificate verification failed" in gw.log_text()
    assert "tls-fallback" not in gw.log_text()
    assert not mx.messages


def test_enforce_mx_not_in_policy_defers(world, ca):
    gw, web, mx = world("enforce", ca, mx_in_policy="*.elsewhere.test")
    dsn_id = bounce_one(gw)
    gw.wait_log(dsn_id + r" status=deferred", scaled(15))
    assert "MX host mx.sts.test is not in the MTA-STS policy of sts.test" in gw.log_text()
    assert not mx.messages


def test_enforce_without_starttls_defers(world, ca):
    gw, web, mx = world("enforce", ca)
    mx.offer_starttls = False
    dsn_id = bounce_one(gw)
    gw.wait_log(dsn_id + r" status=deferred", scaled(15))
    assert "STARTTLS required" in gw.log_text()
    assert not mx.messages


def test_testing_mode_delivers_like_may(world, other_ca):
    gw, web, mx = world("testing", other_ca)
    bounce_one(gw)
    wait_for(lambda: dsns(mx), scaled(15), what="the DSN under MTA-STS testing")
    assert dsns(mx)[0].tls
    assert "mode=testing" in gw.log_text()


def test_hung_policy_server_times_out_then_may(world, other_ca):
    """The policy server never answers: after the route's connect_timeout
    (3 s here) there is no policy (none cached), so the bounce goes out as
    tls = may - a dead web server must not hold bounces forever."""
    gw, web, mx = world("enforce", other_ca, hang=True)
    dsn_id = bounce_one(gw)
    wait_for(lambda: web.requests, scaled(15), what="the policy request")
    gw.wait_log(r"mta-sts domain=sts.test status=fetch-failed", scaled(15))
    wait_for(lambda: dsns(mx), scaled(15), what="the DSN after the fetch timed out")
    gw.wait_log(dsn_id + r" to=<alice@sts.test> .* status=sent")
