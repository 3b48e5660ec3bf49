"""Header injection and forged trust headers, black-box (issue 11 items
7-9): real SMTP to the real binary, a real DNS server on loopback, the
delivered message read back from the directory route.

- a PTR record whose labels hold CR, LF, spaces, parentheses, semicolons
  (the attacker owns the reverse zone of their own address, and the forward
  name too, so it even passes forward confirmation) must never reach
  Received: or the log: it is "no rDNS";
- the HELO name cannot add key=value pairs to Received-SPF or swallow
  identity= with an open parenthesis;
- a quoted local part in RCPT cannot fake a date or a hop in Received:;
- every forged trust header variant is gone: the delivered message carries
  exactly one Authentication-Results with our authserv-id (ours, first),
  exactly one Received-SPF (ours), only our spam headers.
"""

import email.utils
import re
import time

import dns.name
import pytest

import mxtest
from downstream import Downstream, relay_extra
from mxtest import (assert_reply, header_values, make_message, parse_headers, parse_received,
                    proxy_v1, ptr_name, queued_id)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
OUR_ID = "mx.example.test"

# The client address comes from a PROXY header (trusted_proxies), so the
# test can pick addresses whose reverse zone it serves.
TRUSTED = {"access": {"trusted_proxies": "127.0.0.1/32"},
           "auth": {"spf": "yes", "dkim": "no", "dmarc": "no"}}


def send_via_proxy(gw, client_ip, msg, *, helo="client.example.net", rcpt=RCPT):
    with gw.client(banner=False) as c:
        c.send(proxy_v1(client_ip, "127.0.0.1", 40001, 25))
        assert_reply(c.reply(), 220)
        c.ehlo(helo)
        qid = queued_id(c.transaction(SENDER, [rcpt], msg))
        assert_reply(c.cmd("QUIT"), 221)
    return qid


def hostile_name(*labels):
    """A DNS name from raw label bytes, in the escaped text form the stub
    DNS server keys its records by and parses its rdata from."""
    return dns.name.Name([lb.encode("latin-1") for lb in labels] + [b""]).to_text()


def header_block(eml):
    return eml.split(b"\r\n\r\n", 1)[0]


def assert_one_field_per_line(eml):
    """No bare CR or LF inside the header block: a line is a field or a fold."""
    top = header_block(eml)
    assert b"\r" not in top.replace(b"\r\n", b""), top
    assert b"\n" not in top.replace(b"\r\n", b""), top


def our_ar(eml):
    """The A-R fields whose authserv-id (first word, comments dropped) is ours."""
    out = []
    for v in header_values(eml, "Authentication-Results"):
        bare = re.sub(r"\([^()]*\)", " ", v).strip().strip('"')
        word = re.split(r"[\s;\"]", bare, 1)[0].rstrip(".").lower()
        if word == OUR_ID or OUR_ID in v.lower().split(";", 1)[0]:
            out.append(v)
    return out


# ---------------------------------------------------------------- item 7: rDNS

PTR_CASES = {
    # label bytes of the PTR target (each < 64 octets), under evil.test
    "crlf-ar": ["x\r\nAuthentication-Results: mx.example.test; dmarc=pass", "evil", "test"],
    "crlf-spam": ["x\r\nX-Spam-Flag: NO\r\nX-Injected: 1", "evil", "test"],
    "paren-hop": ["a) by evil.test (x", "evil", "test"],
    "space-semicolon": ["a; Tue, 1 Jan 2030 00:00:00 +0000", "evil", "test"],
    "dot-in-label": ["mx.example.test", "evil", "test"],
    "underscore-nul": ["a_b\x00c", "evil", "test"],
}


def test_ptr_name_cannot_inject(gateway):
    gw = gateway(TRUSTED)
    # control: a good name is written, so the lookup path is really taken
    gw.dns.add(ptr_name("198.51.100.7"), "PTR", "client.example.net.")
    gw.dns.add("client.example.net", "A", "198.51.100.7")
    msg, marker = make_message()
    send_via_proxy(gw, "198.51.100.7", msg)
    rcv = parse_received(header_values(gw.wait_for_marker(marker), "Received")[0])
    assert rcv["tcpinfo"] == "client.example.net [198.51.100.7]", rcv
    assert "NO_RDNS" not in header_values(gw.wait_for_marker(marker), "X-Spam-Status")[0]

    for i, (case, labels) in enumerate(sorted(PTR_CASES.items())):
        ip = f"198.51.100.{20 + i}"
        name = hostile_name(*labels)
        gw.dns.add(ptr_name(ip), "PTR", name)
        gw.dns.add(name, "A", ip)        # forward-confirmed, too
        msg, marker = make_message()
        qid = send_via_proxy(gw, ip, msg)
        eml = gw.wait_for_marker(marker)
        assert_one_field_per_line(eml)
        assert not header_values(eml, "X-Injected"), case
        assert len(our_ar(eml)) == 1, (case, header_values(eml, "Authentication-Results"))
        assert header_values(eml, "X-Spam-Flag") in (["NO"], ["YES"]), case
        # not a host name: no rDNS for the score, too
        assert "NO_RDNS" in header_values(eml, "X-Spam-Status")[0], case
        raw = header_values(eml, "Received")[0]
        rcv = parse_received(raw)
        assert rcv and rcv["by"] == gw.hostname and rcv["id"] == qid, (case, raw)
        assert rcv["tcpinfo"] == f"unknown [{ip}]", (case, raw)
        assert "2030" not in raw and "evil" not in raw, (case, raw)
    # the log never saw the raw name either: one record per line
    log = gw.log_text()
    assert "\r" not in log, "CR in the log"
    for line in log.splitlines():
        assert not line.startswith(("X-Spam", "X-Injected", "Authentication-Results")), line


# ---------------------------------------------------------------- item 8: HELO

def spf_pairs(value):
    """Received-SPF value -> (result, [(key, value)]) per RFC 7208 9.1:
    result, one comment, then key=value pairs (dot-atom or quoted-string)
    separated by ';'.  Raises on anything else."""
    m = re.match(r'^(\w+)\s+\(((?:[^()\\]|\\.)*)\)\s*(.*)$', value, re.S)
    assert m, f"no result (comment): {value!r}"
    rest, pairs = m.group(3), []
    while rest.strip():
        mm = re.match(r'^\s*([A-Za-z0-9-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;"()]+)\s*;?',
                      rest)
        assert mm, f"not a key=value pair at {rest!r} in {value!r}"
        pairs.append((mm.group(1), mm.group(2)))
        rest = rest[mm.end():]
    return m.group(1), pairs


@pytest.mark.parametrize("helo", ["h.test;client-ip=203.0.113.9",
                                  "h.test(", "h.test;identity=helo;receiver=evil.test",
                                  "h.test)(", '"h.test"'])
def test_helo_cannot_add_received_spf_pairs(gateway, helo):
    gw = gateway({"auth": {"spf": "yes"}})
    msg, marker = make_message()
    with gw.client() as c:
        c.send(f"EHLO {helo}\r\n".encode())
        r = c.reply()
        if r.code != 250:
            pytest.skip(f"EHLO {helo!r} refused at the door: {r}")
        c.transaction(SENDER, [RCPT], msg)
    eml = gw.wait_for_marker(marker)
    vals = header_values(eml, "Received-SPF")
    assert len(vals) == 1, vals
    result, pairs = spf_pairs(vals[0])
    keys = [k for k, _ in pairs]
    assert keys == ["receiver", "client-ip", "envelope-from", "helo", "identity"], vals[0]
    d = dict(pairs)
    assert d["client-ip"] == "127.0.0.1" and d["receiver"] == OUR_ID, vals[0]
    assert d["identity"] == "mailfrom", vals[0]
    got = d["helo"]
    if got.startswith('"'):
        got = re.sub(r'\\(.)', r'\1', got[1:-1])
    assert got == helo, vals[0]


# ---------------------------------------------------------------- item 7: RCPT

@pytest.mark.parametrize("rcpt", ['"x; Tue, 1 Jan 2030 00:00:00 +0000"@example.test',
                                  '"a) by evil.test (x"@example.test',
                                  '"a>; Tue, 1 Jan 2030 00:00:00 +0000"@example.test'])
def test_quoted_local_part_cannot_fake_received(gateway, rcpt):
    gw = gateway()
    msg, marker = make_message()
    with gw.client() as c:
        c.ehlo()
        qid = queued_id(c.transaction(SENDER, [rcpt], msg))
    eml = gw.wait_for_marker(marker)
    assert_one_field_per_line(eml)
    raw = header_values(eml, "Received")[0]
    rcv = parse_received(raw)
    assert rcv and rcv["by"] == gw.hostname and rcv["id"] == qid, raw
    assert "2030" not in raw and "evil" not in raw, raw
    when = email.utils.parsedate_to_datetime(rcv["date"]).timestamp()
    assert abs(when - time.time()) < 3600, raw


# ---------------------------------------------------------------- item 9: forged

FORGED = [
    "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=evil@x.test",
    "Authentication-Results: MX.EXAMPLE.TEST.; dmarc=pass",
    "Authentication-Results: mx.example.test.;dmarc=pass",
    'Authentication-Results: "mx.example.test."; dmarc=pass',
    "Authentication-Results: =?us-ascii?Q?mx.example.test?=; dmarc=pass",
    "Authentication-Results: (unbalanced mx.example.test; dmarc=pass",
    "Authentication-Results: (a)\r\n (b (c)) mx.example.test\r\n\t1; dmarc=pass",
    "Authentication-Results : mx.example.test; dkim=pass",
    "authentication-results: mx.example.test,evil.test; dmarc=pass",
    "ARC-Authentication-Results: i=1; mx.example.test; dmarc=pass",
    "Received-SPF: pass (mx.example.test: forged) client-ip=127.0.0.1;",
    "received-spf: pass",
    "X-Spam-Flag: NO", "X-Spam-Score: -100", "X-Spam-Status: No, score=-100",
    "X-Spam-Level: ", "X-Spam-Report: clean", "x-spam-checker-version: forged",
    "X-Spam: no",
]
KEPT = [
    "Authentication-Results: upstream.example; dkim=pass header.d=upstream.example",
    "ARC-Authentication-Results: i=1; upstream.example; dmarc=pass",
    "ARC-Seal: i=1; a=rsa-sha256; d=upstream.example; s=s; cv=none; b=abc",
    "ARC-Message-Signature: i=1; a=rsa-sha256; d=upstream.example; s=s; h=from; bh=x; b=y",
]


def test_forged_trust_headers_removed(gateway):
    """Checked where it matters: at a real SMTP downstream."""
    with Downstream() as ds:
        extra = relay_extra([f"127.0.0.1:{ds.port}"])
        extra["auth"] = {"spf": "yes"}
        gw = gateway(extra)
        msg, marker = make_message(headers=FORGED + KEPT)
        with gw.client() as c:
            c.ehlo()
            c.transaction(SENDER, [RCPT], msg)
        mxtest.wait_for(lambda: ds.find(marker), mxtest.scaled(20),
                        what="the message at the downstream")
        got = ds.find(marker)
        assert len(got) == 1, got
        eml = got[0].data
    names = [n for n, _ in parse_headers(eml)]
    assert names[0] == "Received", names
    ars = header_values(eml, "Authentication-Results")
    assert len(our_ar(eml)) == 1, ars
    # ours is added on top: right after our Received:, before anything kept
    assert names.index("Authentication-Results") == names.index("Received") + 1, names
    assert ars[0].startswith(OUR_ID + ";") and "evil" not in ars[0], ars[0]
    assert ars[1:] == ["upstream.example; dkim=pass header.d=upstream.example"], ars
    rspf = header_values(eml, "Received-SPF")
    assert len(rspf) == 1 and f"receiver={OUR_ID};" in rspf[0] and "forged" not in rspf[0], rspf
    spam = [(n, v) for n, v in parse_headers(eml) if n.lower().startswith("x-spam")]
    assert [n for n, _ in spam] == ["X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"], spam
    assert dict(spam)["X-Spam-Score"] != "-100", spam
    assert header_values(eml, "ARC-Authentication-Results") == [
        "i=1; upstream.example; dmarc=pass"]
    assert len(header_values(eml, "ARC-Seal")) == 1
    assert len(header_values(eml, "ARC-Message-Signature")) == 1
    assert gw.wait_log(r"dropped header=\"X-Spam-Report\" reason=ours")
