"""Issue 11 item 14: message lines longer than RFC 5321's 1000 octets (real
senders' unwrapped HTML) are accepted and relayed unchanged - never wrapped,
which would break their DKIM signatures - up to [limits] max_line_length
(default 1M); a longer line gets 550 5.6.0 for the message.  Lines are
streamed (parser -> spool -> DKIM worker -> delivery client), never held
whole, so a session's memory does not grow with the length of a line.

The downstream is aiosmtpd told to take long lines (downstream.py
line_length_limit); DKIM keys live in the gateway's stub DNS server.
"""

import hashlib

import dkim
import pytest

import dnsserver
import mxtest
from downstream import Downstream, relay_extra
from mxtest import assert_reply, make_message, queued_id, scaled, wait_for

SENDER = "alice@dk.test"
RCPT = "user@example.test"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return dnsserver.make_dkim_key(tmp_path_factory.mktemp("dkim"), 2048, "ll")


@pytest.fixture
def ds():
    d = Downstream(line_length_limit=64 << 20).start()
    yield d
    d.stop()


def start(gateway, ds, key=None, limits=None):
    e = relay_extra([f"127.0.0.1:{ds.port}"])
    e["auth"] = {"spf": "no", "dkim": "yes" if key else "no", "dmarc": "no"}
    if limits:
        e["limits"] = limits
    gw = gateway(e)
    if key:
        gw.dns.add("ll._domainkey.dk.test", "TXT", dnsserver._txt_rdata(key[1]))
    return gw


def html_line(n, lead=b"<p>"):
    """n octets of one unwrapped HTML line (no CR/LF), starting with lead."""
    unit = b'<td style="color:#333">caf\xc3\xa9 &amp; more</td> '
    return (lead + unit * (n // len(unit) + 1))[:n]


def our_ar(raw):
    vals = [v for v in mxtest.header_values(raw, "Authentication-Results")
            if v.split(";")[0].strip().lower() == "mx.example.test"]
    assert len(vals) == 1, vals
    return vals[0]


@pytest.mark.parametrize("canon", [b"relaxed", b"simple"])
def test_long_lines_relayed_unchanged_and_dkim_verifies(gateway, ds, key, canon):
    gw = start(gateway, ds, key)
    body = b"\r\n".join([
        html_line(998), html_line(999), html_line(5000),
        html_line(70000, lead=b"."),           # dot-stuffed on the wire, both hops
        html_line(300000) + b"   \t ",          # trailing blanks: relaxed strips them
        b"short line", b"",
    ])
    long_header = "X-Long: " + "v" * 3000       # a header line over 998 octets too
    msg, marker = make_message(sender=SENDER, to=RCPT, headers=[long_header])
    msg = msg.replace(b"hello\r\n", body)
    sig = dnsserver.dkim_sign(msg, "ll", "dk.test", key[0], canon=(canon, canon),
                              headers=[b"from", b"to", b"subject", b"x-long", b"message-id"])
    signed = sig + msg
    assert gw.send(SENDER, [RCPT], signed)
    wait_for(lambda: ds.find(marker), scaled(20), what="delivery to the downstream")
    [rec] = ds.find(marker)
    # byte-identical after our trace headers: no line wrapped, no byte changed
    assert rec.data.endswith(signed), "the message was changed on the way"
    assert b"\r\n" + html_line(300000) + b"   \t \r\n" in rec.data
    assert b"\r\n" + html_line(70000, lead=b".") + b"\r\n" in rec.data
    # verified at ingress, and still verifiable at the downstream
    a = our_ar(rec.data)
    assert "dkim=pass" in a and "header.s=ll" in a, a
    txt = key[1].encode()
    assert dkim.verify(rec.data, dnsfunc=lambda *a, **kw: txt), \
        "the relayed message no longer verifies"
    assert "reason=long_line" not in gw.log_text()


def test_line_over_max_line_length_refused(gateway, ds):
    gw = start(gateway, ds, limits={"max_line_length": "2000", "max_errors": "50"})
    ok, ok_marker = make_message(sender=SENDER)
    ok = ok.replace(b"hello\r\n", html_line(2000) + b"\r\n")
    big, big_marker = make_message(sender=SENDER)
    big = big.replace(b"hello\r\n", html_line(2001) + b"\r\n")
    with gw.client() as c:
        c.ehlo()
        r = c.transaction(SENDER, [RCPT], big, expect_queued=False)
        assert_reply(r, 550, "5.6.0")
        assert "line too long" in r.text
        # the session goes on; a line at the limit is fine
        assert queued_id(c.transaction(SENDER, [RCPT], ok))
    wait_for(lambda: ds.find(ok_marker), scaled(10), what="delivery")
    assert not ds.find(big_marker)
    assert ds.find(ok_marker)[0].data.endswith(ok)
    assert "reason=long_line" in gw.log_text()


def vm_hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_huge_line_is_streamed(gateway, ds):
    size = 24 << 20
    gw = start(gateway, ds, limits={"max_line_length": "32M", "message_size_limit": "40M"})
    warm, wm = make_message(sender=SENDER)
    gw.send(SENDER, [RCPT], warm)
    wait_for(lambda: ds.find(wm), scaled(10), what="warm-up delivery")
    before = vm_hwm_kib(gw.proc.pid)
    msg, marker = make_message(sender=SENDER)
    msg = msg.replace(b"hello\r\n", html_line(size) + b"\r\n")
    assert gw.send(SENDER, [RCPT], msg)
    wait_for(lambda: ds.find(marker), scaled(60), what="delivery of the 24 MiB line")
    [rec] = ds.find(marker)
    assert rec.data.endswith(msg)
    assert hashlib.sha256(rec.data[-len(msg):]).digest() == hashlib.sha256(msg).digest()
    grown = vm_hwm_kib(gw.proc.pid) - before
    if mxtest.SCALE > 1:
        # sanitizer builds keep freed memory in quarantine: peak RSS says
        # nothing about buffering there
        return
    # Buffering the line anywhere (parser, spool, DKIM, client) would cost at
    # least its 24 MiB; streaming costs a few 64 KiB buffers.
    assert grown < 8 * 1024, f"peak RSS grew by {grown} KiB for a {size >> 20} MiB line"
