"""Delivery through a route of type mx: the recipient domain's MX records,
looked up through mxgate's own resolver (the harness's DNS server on
loopback), tried in preference order, with the implicit MX (RFC 5321 5.1)
and a clean bounce for a domain that does not exist.  mx_port points the
MX hosts at the test downstream instead of port 25.
"""

import re

import pytest

import mxtest
from downstream import Downstream, dsn_parts, dsns, outbound_route
from mxtest import make_message, scaled, wait_for

SENDER = "sender@example.test"


@pytest.fixture
def ds():
    d = Downstream().start()
    yield d
    d.stop()


def mx_extra(port, domains="example.test"):
    return {
        "domains": {"accepted_domains": domains},
        "route default": {"type": "mx", "mx_port": str(port), "tls": "none", "directory": None,
                          "connect_timeout": "3s", "command_timeout": "5s"},
        "route outbound": outbound_route(port),
        "queue": {"retry_schedule": "1s, 2s", "max_lifetime": "30s",
                  "delay_warning_time": "0"},
    }


def test_mx_preference_order(gateway, ds):
    """The lower preference value wins even when it is listed second."""
    gw = gateway(mx_extra(ds.port))
    gw.dns.add("example.test", "MX", "20 backup.example.test.")
    gw.dns.add("example.test", "MX", "10 primary.example.test.")
    gw.dns.add("primary.example.test", "A", "127.0.0.1")
    gw.dns.add("backup.example.test", "A", "127.0.0.9")   # nobody listens there
    data, marker = make_message(sender=SENDER)
    gw.send(SENDER, ["user@example.test"], data)
    ds.wait_messages(1)
    [rec] = ds.find(marker)
    assert rec.rcpt_tos == ["user@example.test"]
    wait_for(lambda: not gw.queue_ids(), scaled(5), what="empty queue")
    assert "relay=primary.example.test[127.0.0.1]" in gw.log_text()


def test_mx_failover_to_next_preference(gateway, ds):
    """The first MX refuses connections: the next one gets the message."""
    gw = gateway(mx_extra(ds.port))
    gw.dns.add("example.test", "MX", "10 down.example.test.")
    gw.dns.add("example.test", "MX", "20 up.example.test.")
    gw.dns.add("down.example.test", "A", "127.0.0.9")
    gw.dns.add("up.example.test", "A", "127.0.0.1")
    data, marker = make_message(sender=SENDER)
    gw.send(SENDER, ["user@example.test"], data)
    ds.wait_messages(1)
    assert ds.find(marker)
    assert "relay=up.example.test[127.0.0.1]" in gw.log_text()


def test_implicit_mx_when_no_mx_record(gateway, ds):
    """RFC 5321 5.1: no MX record, so the domain's own address is used."""
    gw = gateway(mx_extra(ds.port))
    gw.dns.add("example.test", "A", "127.0.0.1")
    data, marker = make_message(sender=SENDER)
    gw.send(SENDER, ["user@example.test"], data)
    ds.wait_messages(1)
    assert ds.find(marker)


def test_nonexistent_domain_bounces(gateway, ds):
    """NXDOMAIN for the recipient domain is permanent: a DSN with 5.1.2 goes
    back to the sender (whose own domain has a working MX)."""
    gw = gateway(mx_extra(ds.port, domains="example.test, gone.test"))
    gw.dns.add("example.test", "MX", "10 mx.example.test.")
    gw.dns.add("mx.example.test", "A", "127.0.0.1")
    data, _ = make_message(sender=SENDER)
    gw.send(SENDER, ["user@gone.test"], data)
    wait_for(lambda: dsns(ds), scaled(15), what="a DSN at the downstream")
    [rec] = dsns(ds)
    assert rec.rcpt_tos == [SENDER]
    _, _, rcpts = dsn_parts(rec)
    assert rcpts[0]["action"] == "failed"
    assert rcpts[0]["status"] == "5.1.2"
    wait_for(lambda: not gw.queue_ids(), scaled(10), what="empty queue")


def test_null_mx_bounces_with_5_1_10(gateway, ds):
    """RFC 7505 3 and 4.1: a domain whose only MX is "." accepts no mail -
    no connection is tried (not even to its A record), the DSN goes back at
    once with 5.1.10 "Recipient address has null MX"."""
    gw = gateway(mx_extra(ds.port, domains="example.test, nomail.test"))
    gw.dns.add("example.test", "MX", "10 mx.example.test.")
    gw.dns.add("mx.example.test", "A", "127.0.0.1")
    gw.dns.add("nomail.test", "MX", "0 .")
    gw.dns.add("nomail.test", "A", "127.0.0.1")   # must not be used (implicit MX)
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["user@nomail.test"], data)
    wait_for(lambda: dsns(ds), scaled(15), what="a DSN at the downstream")
    [rec] = dsns(ds)
    assert rec.rcpt_tos == [SENDER]
    _, _, rcpts = dsn_parts(rec)
    assert rcpts[0]["action"] == "failed"
    assert rcpts[0]["status"] == "5.1.10"
    assert "null MX" in rcpts[0]["diagnostic-code"]
    assert [m for m in ds.find(marker) if m.mail_from not in ("", "<>")] == []
    wait_for(lambda: not gw.queue_ids(), scaled(10), what="empty queue")
    assert re.search(qid + r" to=<user@nomail.test> .*status=bounced \(5\.1\.10 ",
                     gw.log_text())


def test_mx_with_no_valid_host_name_defers(gateway, ds):
    """MX records of which none names a valid (LDH) host are broken DNS data
    at the destination, not a null MX: the message is deferred (4.4.3
    malformed DNS reply), never bounced - its owner may fix the zone."""
    gw = gateway(mx_extra(ds.port, domains="example.test, broken.test"))
    gw.dns.add("example.test", "MX", "10 mx.example.test.")
    gw.dns.add("mx.example.test", "A", "127.0.0.1")
    gw.dns.add("broken.test", "MX", "10 mx_1.broken.test.")
    gw.dns.add("mx_1.broken.test", "A", "127.0.0.1")
    data, marker = make_message(sender=SENDER)
    qid = gw.send(SENDER, ["user@broken.test"], data)
    gw.wait_log(qid + r" status=deferred attempts=2 ", scaled(15))
    log = gw.log_text()
    assert re.search(qid + r" to=<user@broken.test> .*status=deferred \(4\.4\.3 MX lookup for "
                     r"broken.test: malformed DNS reply", log), log
    assert "status=bounced" not in log
    assert qid in gw.queue_ids()
    assert not dsns(ds) and not ds.find(marker)
