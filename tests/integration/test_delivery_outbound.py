"""Where bounces go: DSNs leave through the outbound route (role = outbound,
MX delivery to the sender's domain), never through the inbound routes.  The
inbound downstream here behaves like SES/WorkMail inbound-smtp: it refuses
recipients outside our own domain, so a bounce routed like inbound mail would
be refused and lost.  The sender's domain has its own MX (test DNS zone) on a
second loopback sink.  tls = may (RFC 7435) against sinks with and without
STARTTLS, one that refuses it, and one whose TLS handshake fails (then the
same host again in plaintext).
"""

import re
import socket
import ssl
import threading

import pytest

import mxtest
from downstream import Downstream, dsn_parts, dsns, outbound_route, relay_extra
from mxtest import make_message, scaled, wait_for

OURS = "example.test"
SENDER = "alice@sender.test"
SENDER_MX = "127.0.0.2"


@pytest.fixture
def inbound():
    """Our downstream: SES-like, mail for example.test only."""
    d = Downstream()
    d.local_domains = {OURS}
    d.rcpt_replies["nobody@example.test"] = ["550 5.1.1 no such user"]
    d.start()
    yield d
    d.stop()


@pytest.fixture
def sender_mx():
    """The MX of sender.test, on another loopback address."""
    d = Downstream(host=SENDER_MX).start()
    yield d
    d.stop()


def sender_zone(gw, mx_addr=SENDER_MX):
    gw.dns.add("sender.test", "MX", "10 mx.sender.test.")
    gw.dns.add("mx.sender.test", "A", mx_addr)


def bounce_one(gw):
    data, marker = make_message(sender=SENDER, to="nobody@example.test")
    qid = gw.send(SENDER, ["nobody@example.test"], data)
    m = gw.wait_log(qid + r" status=dsn-queued kind=failed dsn_id=(\w+)", scaled(15))
    return qid, m.group(1), marker


def refused_at_inbound(inbound):
    return [(a, r) for a, r in inbound.rcpt_log if a.lower() == SENDER]


def test_dsn_goes_to_sender_mx_not_inbound_downstream(gateway, inbound, sender_mx):
    gw = gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]),
                  "route outbound": outbound_route(sender_mx.port)})
    sender_zone(gw)
    qid, dsn_id, marker = bounce_one(gw)
    wait_for(lambda: dsns(sender_mx), scaled(15), what="the DSN at the sender's MX")
    [rec] = dsns(sender_mx)
    assert rec.rcpt_tos == [SENDER]
    _, _, [r] = dsn_parts(rec)
    assert r["final-recipient"] == "rfc822; nobody@example.test"
    assert r["status"] == "5.1.1"
    assert marker.encode() in rec.data            # the original headers are attached
    # the inbound downstream saw the original message, never the bounce
    assert not dsns(inbound) and not refused_at_inbound(inbound)
    gw.wait_log(re.escape(f"{dsn_id} to=<{SENDER}> route=outbound relay=mx.sender.test[{SENDER_MX}]:"
                          f"{sender_mx.port} ") + r".* status=sent")
    wait_for(lambda: not gw.queue_ids(), scaled(10), what="empty queue")


def test_dsn_for_own_domain_sender_also_goes_by_mx(gateway, inbound, sender_mx):
    """A sender at one of our own domains still gets the bounce by MX
    delivery (its MX may well be us), not through the domain's route."""
    gw = gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]),
                  "route outbound": outbound_route(sender_mx.port)})
    gw.dns.add("example.test", "MX", "10 mx.sender.test.")
    gw.dns.add("mx.sender.test", "A", SENDER_MX)
    data, _ = make_message(sender="carol@example.test", to="nobody@example.test")
    gw.send("carol@example.test", ["nobody@example.test"], data)
    wait_for(lambda: dsns(sender_mx), scaled(15), what="the DSN at example.test's MX")
    assert dsns(sender_mx)[0].rcpt_tos == ["carol@example.test"]
    assert not dsns(inbound)


def test_without_outbound_section_bounces_never_reach_inbound_downstream(gateway, inbound):
    """No [route outbound] in the file: the implicit one (type mx, port 25)
    is used.  The sender's MX does not answer here, so the DSN is deferred -
    but it is never offered to the inbound downstream, which would refuse it
    (the old behaviour: the bounce was lost)."""
    gw = gateway(relay_extra([f"127.0.0.1:{inbound.port}"]))
    sender_zone(gw, mx_addr="127.0.0.9")        # nobody listens there
    qid, dsn_id, _ = bounce_one(gw)
    gw.wait_log(dsn_id + r" status=deferred", scaled(15))
    assert "route=outbound status=unreachable" in gw.log_text()
    assert not refused_at_inbound(inbound), inbound.rcpt_log
    assert not dsns(inbound)
    p = gw.cli("check-config")                   # the implicit route is fine
    assert p.returncode == 0 and "error" not in p.stdout + p.stderr, p.stdout + p.stderr


# ---------------------------------------------------------------- tls = may


@pytest.fixture
def ca(workdir):
    return mxtest.make_test_ca(workdir, hostnames=("mx.sender.test",), ips=(), name="mayca")


def may_gateway(gateway, inbound, port):
    gw = gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]),
                  "route outbound": outbound_route(port, tls="may")})
    sender_zone(gw)
    return gw


def test_tls_may_uses_starttls_when_offered(gateway, inbound, ca):
    """STARTTLS offered: used, and the certificate is not checked (the
    test CA is unknown to mxgate)."""
    mx = Downstream(host=SENDER_MX, tls=ca).start()
    try:
        gw = may_gateway(gateway, inbound, mx.port)
        bounce_one(gw)
        wait_for(lambda: dsns(mx), scaled(15), what="the DSN over TLS")
        assert dsns(mx)[0].tls
    finally:
        mx.stop()


def test_tls_may_plaintext_when_not_offered(gateway, inbound, sender_mx):
    sender_mx.offer_starttls = False
    gw = may_gateway(gateway, inbound, sender_mx.port)
    _, dsn_id, _ = bounce_one(gw)
    wait_for(lambda: dsns(sender_mx), scaled(15), what="the DSN in plaintext")
    assert not dsns(sender_mx)[0].tls
    assert f"{dsn_id} to=<{SENDER}>" in gw.log_text()


class RefusingStarttlsMx:
    """A minimal SMTP server that offers STARTTLS, then either answers it
    with 454 (broken_tls False) or says 220 and answers the ClientHello with
    bytes that are not TLS (broken_tls True: the handshake fails), and
    accepts the message in plaintext."""

    def __init__(self, host=SENDER_MX, broken_tls=False):
        self.broken_tls = broken_tls
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.got = []
        self.commands = []
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(scaled(10))
                f = c.makefile("rb")
                c.sendall(b"220 mx.sender.test ESMTP\r\n")
                data = None
                for line in f:
                    cmd = line.decode("latin-1").strip()
                    self.commands.append(cmd)
                    verb = cmd.split(" ")[0].upper()
                    if data is not None:
                        if cmd == ".":
                            self.got.append(data)
                            data = None
                            c.sendall(b"250 2.0.0 ok\r\n")
                        else:
                            data += line
                    elif verb == "EHLO":
                        c.sendall(b"250-mx.sender.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
                    elif verb == "STARTTLS" and self.broken_tls:
                        c.sendall(b"220 2.0.0 ready\r\n")
                        c.recv(4096)                       # the ClientHello
                        c.sendall(b"500 this is not TLS\r\n")
                        break
                    elif verb == "STARTTLS":
                        c.sendall(b"454 4.7.0 TLS not available due to local problem\r\n")
                    elif verb == "DATA":
                        data = b""
                        c.sendall(b"354 go\r\n")
                    elif verb == "QUIT":
                        c.sendall(b"221 bye\r\n")
                        break
                    else:
                        c.sendall(b"250 ok\r\n")

    def close(self):
        self.sock.close()


def test_tls_may_plaintext_when_starttls_refused(gateway, inbound):
    mx = RefusingStarttlsMx()
    try:
        gw = may_gateway(gateway, inbound, mx.port)
        bounce_one(gw)
        wait_for(lambda: mx.got, scaled(15), what="the DSN after a refused STARTTLS")
        assert "STARTTLS" in mx.commands
        assert b"multipart/report" in mx.got[0]
        assert "tls=skipped" in gw.log_text()
    finally:
        mx.close()


def test_tls_may_plaintext_retry_when_handshake_fails(gateway, inbound):
    """The handshake fails: the same host is tried again at once in
    plaintext (Postfix's "may"), instead of deferring the bounce."""
    mx = RefusingStarttlsMx(broken_tls=True)
    try:
        gw = may_gateway(gateway, inbound, mx.port)
        _, dsn_id, _ = bounce_one(gw)
        wait_for(lambda: mx.got, scaled(15), what="the DSN in plaintext after a failed handshake")
        assert mx.commands.count("STARTTLS") == 1, mx.commands
        assert b"multipart/report" in mx.got[0]
        log = gw.log_text()
        assert f"route=outbound relay=mx.sender.test[{SENDER_MX}]:{mx.port} status=tls-fallback" \
            in log
        assert f"{dsn_id} status=deferred" not in log     # delivered on the first attempt
    finally:
        mx.close()


def test_tls_encrypt_does_not_fall_back(gateway, inbound):
    """The fallback is for may only: tls = encrypt defers instead."""
    mx = RefusingStarttlsMx(broken_tls=True)
    try:
        gw = gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]),
                      "route outbound": outbound_route(mx.port, tls="encrypt")})
        sender_zone(gw)
        _, dsn_id, _ = bounce_one(gw)
        gw.wait_log(dsn_id + r" status=deferred", scaled(15))
        assert not mx.got
        assert "tls-fallback" not in gw.log_text()
    finally:
        mx.close()
