"""No backscatter from the bounce path (issue 11): a message whose sender
failed SPF or DMARC at ingress is never bounced to that (almost certainly
forged) address - the envelope carries the verdicts, the scheduler skips the
DSN with a log line and a metric - and what a DSN returns is capped
(RFC 3462 text/rfc822-headers: header fields only, at most
[queue] bounce_max_headers bytes, cut between whole fields).

Real mxgate, a real SMTP downstream (downstream.py) that refuses the
recipient with 550, the stub DNS server of mxtest for SPF/DMARC records.
Each test has a control (a sender that passes) so it cannot pass vacuously.
"""

import time
import urllib.request

import pytest

from downstream import Downstream, dsn_parts, dsns, relay_extra
from mxtest import free_port, make_message, scaled, wait_for

RCPT = "nobody@example.test"


@pytest.fixture
def ds():
    d = Downstream().start()
    yield d
    d.stop()


def _auth_gateway(gateway, ds, **queue):
    mport = free_port()
    extra = relay_extra([f"127.0.0.1:{ds.port}"], queue=queue or None, bounce_port=ds.port)
    extra["auth"] = {"spf": "yes", "dkim": "no", "dmarc": "yes",
                     "dmarc_enforcement": "monitor"}
    extra["metrics"] = {"listen": f"127.0.0.1:{mport}"}
    gw = gateway(extra)
    gw.metrics_port = mport
    # pass.test: SPF pass from loopback; forged.test: SPF fail from loopback.
    gw.dns.add("pass.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    gw.dns.add("forged.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    gw.dns.add("_dmarc.pass.test", "TXT", '"v=DMARC1; p=none"')
    gw.dns.add("_dmarc.victim.test", "TXT", '"v=DMARC1; p=none"')
    gw.dns.add("victim.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    # Every sender domain's MX (implicit: its A record) is the downstream, so
    # a DSN through the outbound route would arrive there - also one that
    # must be suppressed.
    for dom in ("pass.test", "forged.test", "victim.test"):
        gw.dns.add(dom, "A", "127.0.0.1")
    return gw


def _bounce(gw, ds, mail_from, header_from):
    ds.rcpt_replies[RCPT] = ["550 5.1.1 no such user here"]
    data, marker = make_message(sender=header_from, to=RCPT)
    qid = gw.send(mail_from, [RCPT], data)
    gw.wait_log(qid + r" to=<nobody@example\.test> status=bounced")
    wait_for(lambda: qid not in gw.queue_ids(), scaled(10), what="message removed")
    return qid, marker


def _metric(gw, name, label):
    body = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics",
                                  timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(f'{name}{{reason="{label}"}} '):
            return float(line.split()[-1])
    return 0.0


def test_no_dsn_to_spf_fail_sender(gateway, ds):
    gw = _auth_gateway(gateway, ds)
    # control: an SPF-pass sender is bounced as before
    qid_ok, marker_ok = _bounce(gw, ds, "alice@pass.test", "alice@pass.test")
    wait_for(lambda: dsns(ds), scaled(10), what="the DSN to the SPF-pass sender")
    [rec] = dsns(ds)
    assert rec.rcpt_tos == ["alice@pass.test"]
    # the forged sender: bounced by the downstream, but no DSN
    qid, marker = _bounce(gw, ds, "ceo@forged.test", "ceo@forged.test")
    gw.wait_log(qid + r" to=<nobody@example\.test> status=bounced dsn=no-spf-fail")
    gw.wait_log(qid + r" status=dsn-suppressed reason=spf_fail from=<ceo@forged\.test> "
                r"spf=fail")
    time.sleep(0.5)   # a DSN would have been injected before the removal
    assert len(dsns(ds)) == 1, [m.rcpt_tos for m in dsns(ds)]
    assert not [m for m in dsns(ds) if "ceo@forged.test" in m.rcpt_tos]
    assert _metric(gw, "mxgate_dsn_suppressed_total", "spf_fail") == 1


def test_no_dsn_to_dmarc_fail_sender(gateway, ds):
    gw = _auth_gateway(gateway, ds)
    # SPF passes for the envelope (pass.test) but From: victim.test is not
    # aligned and not DKIM-signed: DMARC fail (p=none, so it was accepted).
    qid, marker = _bounce(gw, ds, "bounce@pass.test", "boss@victim.test")
    gw.wait_log(qid + r" status=dsn-suppressed reason=dmarc_fail .*spf=pass dmarc=fail")
    gw.wait_log(qid + r" to=<nobody@example\.test> status=bounced dsn=no-dmarc-fail")
    time.sleep(0.5)
    assert not dsns(ds)
    assert _metric(gw, "mxgate_dsn_suppressed_total", "dmarc_fail") == 1


def test_verdicts_survive_in_the_envelope(gateway, ds):
    """The verdict is in the queued envelope, so a restart in between does
    not forget it."""
    gw = _auth_gateway(gateway, ds)
    ds.rcpt_replies[RCPT] = ["451 4.3.0 later"] * 50
    data, _ = make_message(sender="ceo@forged.test", to=RCPT)
    qid = gw.send("ceo@forged.test", [RCPT], data)
    env = gw.envelope_text(qid)
    assert "\nspf: fail\n" in env, env


def test_dsn_returns_capped_headers_only(gateway, ds):
    gw = _auth_gateway(gateway, ds, bounce_max_headers="1K")
    filler = [f"X-Filler-{i:02d}: " + "f" * 90 for i in range(40)]
    ds.rcpt_replies[RCPT] = ["550 5.1.1 no such user here"]
    data, marker = make_message(sender="alice@pass.test", to=RCPT, headers=filler,
                                body="SECRET-BODY-TEXT\r\n")
    gw.send("alice@pass.test", [RCPT], data)
    wait_for(lambda: dsns(ds), scaled(10), what="the DSN")
    [rec] = dsns(ds)
    msg, _, _ = dsn_parts(rec)
    part = msg.get_payload()[2].get_payload()
    raw = part.encode()
    assert len(raw) <= 1024 + 2, len(raw)
    assert b"SECRET-BODY-TEXT" not in rec.data
    assert b"X-Filler-39" not in rec.data          # cut away
    assert b"Received: " in raw                    # the first fields are kept
    # cut between fields: every kept line is a whole field or a continuation
    for line in part.replace("\r\n", "\n").split("\n"):
        if line and line[0] not in " \t":
            assert ":" in line, line
        if line.startswith("X-Filler-"):
            assert line.endswith("f" * 90), line
