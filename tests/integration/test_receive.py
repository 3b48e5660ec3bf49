"""Receiving half, core protocol: a normal message and its Received header,
PIPELINING, split packets, the simple commands, sequence and syntax errors,
command-line limits, error and recipient limits, SIZE, relay control,
SMTPUTF8/8BITMIME.  Black box: raw sockets against the real binary."""

import datetime
import email.utils

import pytest

from mxtest import (ConnectionClosed, assert_reply, closed_port, dot_stuff, header_values,
                    make_message, parse_headers, parse_received, queued_id, scaled, wait_for)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
HELO = "client.example.net"


def our_received(gw, eml):
    """The topmost Received header must be the one mxgate added."""
    vals = header_values(eml, "Received")
    assert vals, f"no Received header in the delivered message:\n{eml[:2000]!r}"
    rcv = parse_received(vals[0])
    assert rcv is not None, f"topmost Received header is not 'from ... ; date': {vals[0]!r}"
    assert rcv["by"] == gw.hostname, f"topmost Received is not ours: {vals[0]!r}"
    return rcv, vals[0]


def check_received(gw, eml, *, qid, proto, helo=HELO, addr="127.0.0.1", rcpt=None):
    rcv, raw = our_received(gw, eml)
    assert rcv["from_"] == helo, f"HELO name in Received: {raw!r}"
    lit = f"[IPv6:{addr}]" if ":" in addr else f"[{addr}]"
    assert rcv["tcpinfo"] and lit in rcv["tcpinfo"], \
        f"'from {helo} (rDNS {lit})' expected (RFC 5321 4.4): {raw!r}"
    assert rcv["with_"] == proto, f"'with {proto}' expected: {raw!r}"
    assert rcv["id"] == qid, f"'id {qid}' expected: {raw!r}"
    if rcpt is None:
        assert rcv["for_"] is None, f"no 'for' clause expected with several recipients: {raw!r}"
    else:
        assert rcv["for_"] == f"<{rcpt}>", f"'for <{rcpt}>' expected: {raw!r}"
    when = email.utils.parsedate_to_datetime(rcv["date"])
    assert when.tzinfo is not None, f"date without zone: {raw!r}"
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when).total_seconds()) < 600, f"date far from now: {raw!r}"
    return rcv, raw


# ---------------------------------------------------------------- a normal message

def test_banner_and_ehlo(gateway):
    gw = gateway({"limits": {"message_size_limit": "10M"}})
    with gw.client() as c:
        assert_reply(c.banner, 220)
        assert c.banner.lines[0].split()[0] == gw.hostname, f"banner: {c.banner}"
        assert "ESMTP" in c.banner.lines[0].split(), f"banner: {c.banner}"
        e = c.ehlo(HELO)
        assert e.lines[0].split()[0] == gw.hostname, f"EHLO greeting: {e}"
        kw = e.keywords
        for k in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE"):
            assert k in kw, f"{k} not advertised: {e}"
        assert kw["SIZE"] == str(10 * 1024 * 1024), f"SIZE: {e}"
        assert "STARTTLS" not in kw, f"STARTTLS advertised without a certificate: {e}"
        h = c.cmd(f"HELO {HELO}")
        assert_reply(h, 250)
        assert len(h.lines) == 1, f"HELO reply must be one line: {h}"
        assert_reply(c.cmd("QUIT"), 221, "2.0.0")
        c.wait_closed(scaled(5))


def test_normal_message_received_header(gateway):
    gw = gateway()
    body = "first line\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n"
    msg, marker = make_message(body=body, headers=[
        "Received: from upstream.example.net by client.example.net;"
        " Wed, 25 Nov 2026 07:00:00 +0000"])
    with gw.client() as c:
        assert_reply(c.banner, 220)
        c.ehlo(HELO)
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250, "2.1.0")
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250, "2.1.5")
        assert_reply(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg) + b".\r\n")
        qid = queued_id(c.reply())
        assert_reply(c.cmd("QUIT"), 221)
        c.wait_closed(scaled(5))
    eml = gw.wait_for_marker(marker)
    assert eml.endswith(msg), "the message (headers and dot-unstuffed body) must arrive" \
        " byte-exact after the headers mxgate prepends"
    check_received(gw, eml, qid=qid, proto="ESMTP", rcpt=RCPT)
    names = [n.lower() for n, _ in parse_headers(eml)]
    assert names.count("received") == 2, "exactly one Received header added"
    wait_for(lambda: not gw.queue_ids() and not gw.msg_files(), scaled(10),
             what="queue empty after delivery")


def test_ipv6_client_received_header(gateway):
    gw = gateway(ipv6=True)
    msg, marker = make_message()
    with gw.client(host="::1") as c:
        assert_reply(c.banner, 220)
        c.ehlo(HELO)
        qid = queued_id(c.transaction(SENDER, [RCPT], msg))
    eml = gw.wait_for_marker(marker)
    check_received(gw, eml, qid=qid, proto="ESMTP", addr="::1", rcpt=RCPT)


def test_helo_session_received_says_smtp(gateway):
    gw = gateway()
    msg, marker = make_message()
    with gw.client() as c:
        assert_reply(c.cmd(f"HELO {HELO}"), 250)
        qid = queued_id(c.transaction(SENDER, [RCPT], msg))
    eml = gw.wait_for_marker(marker)
    check_received(gw, eml, qid=qid, proto="SMTP", rcpt=RCPT)


def test_message_in_queue_before_delivery(gateway):
    """With a downstream that is down the message stays queued: envelope in a
    state folder, msg/ID holds the bytes as received (nothing prepended)."""
    down = closed_port()
    gw = gateway({"route default": {"type": "smtp", "directory": None,
                                    "hosts": f"127.0.0.1:{down}", "tls": "none",
                                    "connect_timeout": "1s"}})
    msg, marker = make_message()
    qid = gw.send(SENDER, [RCPT, "second@example.test"], msg)
    assert qid in gw.queue_ids(), f"{qid} not in {gw.queue_files()}"
    m = gw.queue_dir / "msg" / qid
    assert m.exists(), f"no {m}"
    assert m.read_bytes() == msg
    env = gw.envelope_text(qid)
    for s in (SENDER, RCPT, "second@example.test", "127.0.0.1", HELO):
        assert s in env, f"{s!r} not in the envelope {env!r}"
    assert not gw.incoming_files(), f"left in incoming/: {gw.incoming_files()}"


def test_two_recipients_no_for_clause(gateway):
    gw = gateway()
    msg, marker = make_message()
    qid = gw.send(SENDER, [RCPT, "other@example.test"], msg)
    eml = gw.wait_for_marker(marker)
    check_received(gw, eml, qid=qid, proto="ESMTP", rcpt=None)


def test_null_sender_accepted(gateway):
    gw = gateway()
    msg, marker = make_message()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<>"), 250, "2.1.0")
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        queued_id(c.reply())
    gw.wait_for_marker(marker)


# ---------------------------------------------------------------- pipelining

def test_pipelining_whole_transaction(gateway):
    gw = gateway()
    msg1, m1 = make_message()
    msg2, m2 = make_message(to="other@example.test")
    with gw.client() as c:
        c.send(f"EHLO {HELO}\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\n"
               "RCPT TO:<nobody@elsewhere.test>\r\nRCPT TO:<second@example.test>\r\nDATA\r\n")
        e = c.reply()
        assert_reply(e, 250)
        assert "PIPELINING" in e.keywords
        assert_reply(c.reply(), 250, "2.1.0")
        assert_reply(c.reply(), 250, "2.1.5")
        assert_reply(c.reply(), 550, "5.7.1")
        assert_reply(c.reply(), 250, "2.1.5")
        assert_reply(c.reply(), 354)
        # the message, then a whole second transaction, in one write
        c.send(dot_stuff(msg1) + b".\r\n" + f"MAIL FROM:<{SENDER}>\r\n"
               "RCPT TO:<other@example.test>\r\nDATA\r\n".encode())
        id1 = queued_id(c.reply())
        assert_reply(c.reply(), 250, "2.1.0")
        assert_reply(c.reply(), 250, "2.1.5")
        assert_reply(c.reply(), 354)
        c.send(dot_stuff(msg2) + b".\r\nQUIT\r\n")
        id2 = queued_id(c.reply())
        assert_reply(c.reply(), 221)
        rest = c.wait_closed(scaled(5))
        assert rest == b"", f"unexpected bytes after 221: {rest!r}"
    assert id1 != id2
    e1 = gw.wait_for_marker(m1)
    e2 = gw.wait_for_marker(m2)
    check_received(gw, e1, qid=id1, proto="ESMTP", rcpt=None)
    check_received(gw, e2, qid=id2, proto="ESMTP", rcpt="other@example.test")


def test_pipelined_rset_and_noop_in_order(gateway):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nRSET\r\nDATA\r\nNOOP\r\n"
               "VRFY user@example.test\r\nFOO\r\n")
        assert_reply(c.reply(), 250, "2.1.0")
        assert_reply(c.reply(), 250, "2.1.5")
        assert_reply(c.reply(), 250, "2.0.0")
        assert_reply(c.reply(), 503, "5.5.1")
        assert_reply(c.reply(), 250, "2.0.0")
        assert c.reply().code == 252
        assert_reply(c.reply(), 500, "5.5.2")
        assert c.pending() == b""


def test_whole_session_split_into_single_bytes(gateway):
    """A resumable parser: every command and the end of data arrive one byte
    per packet."""
    gw = gateway()
    msg, marker = make_message(body="a\r\n.b\r\n")
    with gw.client() as c:
        c.send_split(f"EHLO {HELO}\r\n")
        assert_reply(c.reply(), 250)
        c.send_split(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n")
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 354)
        data = dot_stuff(msg)
        c.send(data[:-4])
        c.send_split(data[-4:] + b".\r\n", delay=0.02)
        qid = queued_id(c.reply())
        c.send_split(b"QUIT\r\n")
        assert_reply(c.reply(), 221)
    eml = gw.wait_for_marker(marker)
    assert eml.endswith(msg)
    check_received(gw, eml, qid=qid, proto="ESMTP", rcpt=RCPT)


# ---------------------------------------------------------------- simple commands

def test_simple_commands(gateway):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("NOOP"), 250, "2.0.0")
        assert_reply(c.cmd("noop"), 250, "2.0.0")
        assert_reply(c.cmd("RSET"), 250, "2.0.0")
        r = c.cmd(f"VRFY {RCPT}")
        assert r.code == 252, f"VRFY must answer 252: {r}"
        assert_reply(c.cmd("HELP"), 214)
        assert_reply(c.cmd("FOOBAR baz"), 500, "5.5.2")
        assert_reply(c.cmd("MAILFROM:<a@b.test>"), 500, "5.5.2")
        # the session is still fine
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("RSET"), 250, "2.0.0")
        assert_reply(c.cmd("DATA"), 503, "5.5.1")
        assert_reply(c.cmd("QUIT"), 221, "2.0.0")
        assert c.wait_closed(scaled(5)) == b""


def test_sequence_errors(gateway):
    gw = gateway({"limits": {"max_errors": 50}})
    with gw.client() as c:
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 503, "5.5.1")
        assert_reply(c.cmd("EHLO"), 501)
        c.ehlo()
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 503, "5.5.1")
        assert_reply(c.cmd("DATA"), 503, "5.5.1")
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 503, "5.5.1")
        r = c.cmd("DATA")       # RFC 5321 3.3: 503 or 554 without a recipient
        assert r.code in (503, 554) and r.enh == "5.5.1", str(r)
        assert_reply(c.cmd(f"RCPT TO:{RCPT}"), 501)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}> FOO=bar"), 555)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("RSET"), 250)
        assert_reply(c.cmd(f"MAIL FROM:{SENDER}"), 501)
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}> FOO=bar"), 555)
        assert_reply(c.cmd("NOOP"), 250)


@pytest.mark.parametrize("bad", [b"\n", b"\r"], ids=["bare-LF", "bare-CR"])
def test_bare_lf_or_cr_in_command_line(gateway, bad):
    """Only CRLF ends a command line (STYLE rule 17).  A line with a bare LF or
    CR gets 500; what follows the bare LF/CR on that line must never run as a
    command of its own (acceptable: one 500 for the whole line, or 500 and
    close the connection)."""
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        c.send(f"MAIL FROM:<{SENDER}>".encode() + bad + f"RCPT TO:<{RCPT}>\r\n".encode())
        r = c.reply()
        assert r.code == 500, f"bare {bad!r} in a command line: expected 500, got {r}"
        extra = c.pending()
        if c.eof:
            return      # closed after the error: nothing behind the bare LF/CR ran
        assert extra == b"", f"the text after a bare {bad!r} ran as a command: {extra!r}"
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 503)   # MAIL was not accepted
        assert_reply(c.cmd("NOOP"), 250)


def test_command_line_length_limit(gateway):
    """RFC 5321 4.5.3.1.4: 512 octets including CRLF."""
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("NOOP " + "A" * (512 - 5 - 2)), 250)
        r = c.cmd("NOOP " + "A" * (512 - 5 - 2 + 1))
        assert_reply(r, 500, "5.5.2")
        assert "too long" in r.text.lower(), f"expected 'line too long': {r}"
        assert c.pending() == b"", "the tail of a long line was taken as a command"
        r = c.cmd("NOOP " + "B" * 5000 + " QUIT")
        assert_reply(r, 500, "5.5.2")
        assert c.pending() == b""
        assert_reply(c.cmd("NOOP"), 250)


# ---------------------------------------------------------------- limits

def test_too_many_errors(gateway):
    gw = gateway({"limits": {"max_errors": 3}})
    with gw.client() as c:
        c.ehlo()
        got = None
        for i in range(1, 7):
            try:
                r = c.cmd(f"BOGUS{i}")
            except ConnectionClosed:
                pytest.fail(f"connection closed after {i - 1} errors without a 421")
            if r.code == 421:
                got = i
                break
            assert_reply(r, 500, "5.5.2")
        assert got in (3, 4), f"421 after {got} errors with max_errors = 3"
        c.wait_closed(scaled(5))


def test_max_recipients(gateway):
    gw = gateway({"limits": {"max_recipients": 3}})
    msg, marker = make_message()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        for i in range(3):
            assert_reply(c.cmd(f"RCPT TO:<u{i}@example.test>"), 250)
        assert_reply(c.cmd("RCPT TO:<u3@example.test>"), 452, "4.5.3")
        assert_reply(c.cmd("RCPT TO:<u4@example.test>"), 452, "4.5.3")
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        qid = queued_id(c.reply())
    eml = gw.wait_for_marker(marker)
    check_received(gw, eml, qid=qid, proto="ESMTP", rcpt=None)


def test_size_declared_and_actual(gateway):
    gw = gateway({"limits": {"message_size_limit": "10K"}})
    big, big_marker = make_message(body=("x" * 78 + "\r\n") * 250)   # ~20 KB
    small, small_marker = make_message(body="small\r\n")
    with gw.client() as c:
        e = c.ehlo()
        assert e.keywords.get("SIZE") == "10240", f"SIZE: {e}"
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}> SIZE=20000"), 552, "5.3.4")
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}> SIZE=5000"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(big)
        assert c.pending() == b"", "reply before the end of data"
        c.send(b".\r\n")
        assert_reply(c.reply(), 552, "5.3.4")
        assert c.pending() == b""
        # the session goes on with a message that fits
        r = c.transaction(SENDER, [RCPT], small, mail_params="SIZE=1000")
        queued_id(r)
    gw.wait_for_marker(small_marker)
    assert not gw.find_in_mailbox(big_marker)
    assert not gw.incoming_files(), f"left in incoming/: {gw.incoming_files()}"


# ---------------------------------------------------------------- relay control

RELAY_TRICKS = [
    "user%elsewhere.test@example.test",          # %-hack
    "user!elsewhere.test@example.test",          # bang path
    '"user@elsewhere.test"@example.test',        # quoted local part with @
    "@example.test:user@elsewhere.test",         # source route to elsewhere
    "@example.test,@relay.test:user@elsewhere.test",
    "user@elsewhere.test@example.test",          # two @
    "user@[127.0.0.1]",                          # address literal
    "user@example.test.elsewhere.test",
    "user@elsewhere.test ",
]


def test_relay_refused(gateway):
    gw = gateway({"limits": {"max_errors": 50}})
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<user@elsewhere.test>"), 550, "5.7.1")
        assert_reply(c.cmd("RCPT TO:<postmaster@elsewhere.test>"), 550, "5.7.1")
        for t in RELAY_TRICKS:
            r = c.cmd(f"RCPT TO:<{t}>")
            assert str(r.code)[0] == "5", f"relay trick <{t}> not refused: {r}"
        r = c.cmd("DATA")
        assert r.code in (503, 554), f"DATA without a valid recipient: {r}"
        assert_reply(c.cmd("RSET"), 250)
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<User@EXAMPLE.Test>"), 250, "2.1.5")
        assert_reply(c.cmd("RCPT TO:<user@elsewhere.test>"), 550, "5.7.1")
        msg, marker = make_message()
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        queued_id(c.reply())
    eml = gw.wait_for_marker(marker)
    rcv, raw = our_received(gw, eml)
    assert (rcv["for_"] or "").lower() == "<user@example.test>", raw
    wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue empty")


def test_accepted_recipients_enforced(gateway):
    gw = gateway({"domains": {"accepted_recipients": "alice@example.test, bob@example.test"}})
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250)
        assert_reply(c.cmd("RCPT TO:<bob@EXAMPLE.TEST>"), 250)
        r = c.cmd("RCPT TO:<carol@example.test>")
        assert r.code == 550, f"unlisted recipient: {r}"
        assert_reply(c.cmd("RCPT TO:<alice@elsewhere.test>"), 550, "5.7.1")
        assert_reply(c.cmd("RCPT TO:<alice%elsewhere.test@example.test>"), "5xx")


# ---------------------------------------------------------------- SMTPUTF8 / 8BITMIME

def test_smtputf8(gateway):
    gw = gateway()
    body = "Grüße aus Köln\r\n"
    msg, marker = make_message(subject="Grüße", body=body)
    with gw.client() as c:
        e = c.ehlo()
        assert "SMTPUTF8" in e.keywords and "8BITMIME" in e.keywords
        assert_reply(c.cmd("MAIL FROM:<jörg@client.example.net>"), "5xx")
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<üser@example.test>"), "5xx")
        assert_reply(c.cmd("RSET"), 250)
        assert_reply(c.cmd("MAIL FROM:<jörg@client.example.net> SMTPUTF8 BODY=8BITMIME"), 250)
        assert_reply(c.cmd("RCPT TO:<üser@example.test>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        qid = queued_id(c.reply())
    eml = gw.wait_for_marker(marker)
    assert eml.endswith(msg)
    check_received(gw, eml, qid=qid, proto="UTF8SMTP", rcpt="üser@example.test")


def test_8bitmime_body_kept(gateway):
    gw = gateway()
    msg, marker = make_message(body="caf\xe9 \u2603 \xff\r\n",
                               headers=["MIME-Version: 1.0",
                                        "Content-Type: text/plain; charset=utf-8",
                                        "Content-Transfer-Encoding: 8bit"])
    qid = gw.send(SENDER, [RCPT], msg, mail_params="BODY=8BITMIME")
    eml = gw.wait_for_marker(marker)
    assert eml.endswith(msg)
    check_received(gw, eml, qid=qid, proto="ESMTP", rcpt=RCPT)
