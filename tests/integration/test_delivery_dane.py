"""DANE (RFC 7672) on the outbound route (tls = dane): bounces to a sender
domain whose zone is DNSSEC-signed (ldns-signzone, served by a real unbound
on loopback; mxgate validates with the zone's key as trust anchor) and
publishes TLSA records for its MX host.  Usable DANE-EE / DANE-TA records
make TLS and their match mandatory (else the DSN is deferred, never sent in
plaintext); a zone that is not signed makes the TLSA records meaningless and
the route acts as tls = may.
"""

import hashlib
import re
import subprocess

import pytest

import mxtest
from dnsserver import UnboundServer
from downstream import Downstream, dsns, outbound_route, relay_extra
from mxtest import make_message, scaled, wait_for

SENDER = "alice@dane.test"
MX_ADDR = "127.0.0.2"


def _der(args, pem_path):
    return subprocess.run(["openssl", *args, "-in", pem_path], check=True,
                          capture_output=True, timeout=30).stdout


def spki_sha256(cert_pem):
    pub = _der(["x509", "-noout", "-pubkey"], cert_pem)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True, timeout=30).stdout
    return hashlib.sha256(der).hexdigest()


def cert_sha256(cert_pem):
    return hashlib.sha256(_der(["x509", "-outform", "DER"], cert_pem)).hexdigest()


@pytest.fixture
def ca(workdir):
    return mxtest.make_test_ca(workdir, hostnames=("mx.dane.test",), ips=(), name="dane")


@pytest.fixture
def inbound():
    d = Downstream()
    d.local_domains = {"example.test"}
    d.rcpt_replies["nobody@example.test"] = ["550 5.1.1 no such user"]
    d.start()
    yield d
    d.stop()


@pytest.fixture
def world(workdir, gateway, inbound):
    """make(mx, tlsa, signed=True) -> gateway whose bounces for dane.test go
    to mx (a Downstream on MX_ADDR) through a validating resolver."""
    servers = []

    def make(mx, tlsa, signed=True, tamper_tlsa=False):
        dns = UnboundServer(workdir)
        servers.append(dns)
        recs = [("dane.test", "MX", "10 mx.dane.test."), ("mx.dane.test", "A", MX_ADDR)]
        recs += [(f"_{mx.port}._tcp.mx.dane.test", "TLSA", t) for t in tlsa]
        if signed:
            ta = dns.add_signed_zone("dane.test", recs)
            if tamper_tlsa:     # change the signed TLSA data: answers become bogus
                f = dns.auth_zones["dane.test"]
                text, n = re.subn(r"(TLSA\s+3\s+1\s+1\s+)([0-9a-fA-F])",
                                  lambda m: m.group(1) + ("1" if m.group(2) != "1" else "2"),
                                  f.read_text(), count=1)
                assert n == 1, "no TLSA record to tamper with"
                f.write_text(text)
        else:
            for name, rtype, rdata in recs:
                dns.add(name, rtype, rdata)
            # validation on, but nothing anchors dane.test: its answers are insecure
            ta = dns.add_signed_zone("anchor.test", [("anchor.test", "TXT", "x")])
        dns.start()
        return gateway({**relay_extra([f"127.0.0.1:{inbound.port}"]),
                        "route outbound": outbound_route(mx.port, tls="dane"),
                        "dns": {"forwarders": dns.forwarder, "timeout": "2s",
                                "trust_anchor_file": ta}}, dns=False)
    yield make
    for dns in servers:
        dns.close()


@pytest.fixture
def mx(ca):
    d = Downstream(host=MX_ADDR, tls=ca).start()
    yield d
    d.stop()


def bounce_one(gw):
    data, _ = make_message(sender=SENDER, to="nobody@example.test")
    qid = gw.send(SENDER, ["nobody@example.test"], data)
    m = gw.wait_log(qid + r" status=dsn-queued kind=failed dsn_id=(\w+)", scaled(15))
    return m.group(1)


def test_dane_ee_match_is_verified(world, mx, ca):
    gw = world(mx, [f"3 1 1 {spki_sha256(ca.cert)}"])
    dsn_id = bounce_one(gw)
    wait_for(lambda: dsns(mx), scaled(15), what="the DSN over DANE-verified TLS")
    assert dsns(mx)[0].tls and dsns(mx)[0].rcpt_tos == [SENDER]
    gw.wait_log(dsn_id + r" to=<alice@dane.test> route=outbound relay=mx\.dane\.test\S* .*"
                r"tls=TLS\S+ \S+ dane status=sent")


def test_dane_ta_match_is_verified(world, mx, ca):
    gw = world(mx, [f"2 0 1 {cert_sha256(ca.ca_cert)}"])
    dsn_id = bounce_one(gw)
    wait_for(lambda: dsns(mx), scaled(15), what="the DSN over DANE-TA-verified TLS")
    gw.wait_log(dsn_id + r" to=<alice@dane.test> .* dane status=sent")


def test_dane_mismatch_defers_and_never_downgrades(world, mx):
    gw = world(mx, ["3 1 1 " + "00" * 32])
    dsn_id = bounce_one(gw)
    gw.wait_log(dsn_id + r" status=deferred", scaled(15))
    log = gw.log_text()
    assert "certificate verification failed" in log, log[-3000:]
    assert "tls-fallback" not in log
    assert not mx.messages


def test_dane_without_starttls_defers(world, mx, ca):
    mx.offer_starttls = False
    gw = world(mx, [f"3 1 1 {spki_sha256(ca.cert)}"])
    dsn_id = bounce_one(gw)
    gw.wait_log(dsn_id + r" status=deferred", scaled(15))
    assert "STARTTLS required" in gw.log_text()
    assert not mx.messages


def test_insecure_zone_acts_as_may(world, mx):
    """The same wrong TLSA record in an unsigned zone: no DANE, so TLS
    without authentication (tls = may), and the DSN is delivered."""
    gw = world(mx, ["3 1 1 " + "00" * 32], signed=False)
    dsn_id = bounce_one(gw)
    wait_for(lambda: dsns(mx), scaled(15), what="the DSN over opportunistic TLS")
    assert dsns(mx)[0].tls
    log = gw.log_text()
    assert f"{dsn_id} to=<{SENDER}>" in log
    assert " dane status=sent" not in log


def test_bogus_tlsa_skips_the_host(world, mx, ca):
    """A TLSA answer that fails validation is neither DANE nor "no DANE":
    the host is not used (RFC 7672 2.2) and the bounce is deferred."""
    gw = world(mx, [f"3 1 1 {spki_sha256(ca.cert)}"], tamper_tlsa=True)
    dsn_id = bounce_one(gw)
    gw.wait_log(dsn_id + r" status=deferred", scaled(15))
    assert f"TLSA lookup for _{mx.port}._tcp.mx.dane.test failed (bogus)" in gw.log_text()
    assert not mx.messages
