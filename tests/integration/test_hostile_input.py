"""Hostile clients, part 2 - what they send (issue 6).

10 MB command and header lines; 100,000 RCPTs; NUL bytes and invalid UTF-8
in commands and headers; header injection through MAIL FROM / RCPT
parameters and HELO; relay attempts through every old routing trick.  Each
test asserts mxgate's exact answer and that the daemon serves a normal client
afterwards."""

import threading

import pytest

from mxtest import assert_reply, header_values, make_message, queued_id, scaled, wait_for

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
MB = 1024 * 1024


def assert_still_serves(gw):
    msg, marker = make_message(subject="after-abuse")
    gw.send(SENDER, [RCPT], msg)
    gw.wait_for_marker(marker)


def start_data(c, rcpts=(RCPT,)):
    assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    for r in rcpts:
        assert_reply(c.cmd(f"RCPT TO:<{r}>"), 250)
    assert_reply(c.cmd("DATA"), 354)


def send_background(c, blob):
    """sendall in a thread (the server may stop reading while we do not
    read its replies); returns the thread."""
    t = threading.Thread(target=lambda: c.sock.sendall(blob), daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------- huge lines

def test_ten_megabyte_command_line(gateway):
    gw = gateway()
    with gw.client(timeout=scaled(30)) as c:
        c.ehlo()
        t = send_background(c, b"MAIL FROM:<" + b"a" * (10 * MB) + b"@example.net>\r\n")
        assert_reply(c.reply(timeout=scaled(60)), 500, "5.5.2")
        t.join(scaled(30))
        assert not t.is_alive()
        assert c.pending(0.3) == b"", "more than one reply to one over-long line"
        assert_reply(c.cmd("NOOP"), 250)
        qid = queued_id(c.transaction(SENDER, [RCPT], make_message()[0]))
        assert qid
    assert_still_serves(gw)


def test_ten_megabyte_line_without_end(gateway):
    """10 MB with no line end at all, then the client stops: nothing
    buffered grows (the line is discarded as it arrives), the session times
    out normally."""
    gw = gateway({"limits": {"command_timeout": "3s"}})
    with gw.client(timeout=scaled(30)) as c:
        c.ehlo()
        t = send_background(c, b"X" * (10 * MB))
        t.join(scaled(30))
        assert not t.is_alive(), "mxgate stopped reading a line it should discard"
        r = c.reply(timeout=scaled(15))
        assert_reply(r, 421, "4.4.2")
    assert_still_serves(gw)


@pytest.mark.parametrize("shape", ["one-line", "folded", "many-fields"])
def test_ten_megabyte_header(gateway, shape):
    """A 10 MB header (one line, one folded field, or many fields) is
    refused at the end of data with 5xx; nothing is queued."""
    gw = gateway()
    if shape == "one-line":
        hdr = b"X-Big: " + b"h" * (10 * MB) + b"\r\n"
        want = (550, "5.6.0")   # line over max_line_length (1M by default)
    elif shape == "folded":
        hdr = b"X-Big: start\r\n" + (b"\t" + b"h" * 900 + b"\r\n") * (10 * MB // 902)
        want = (552, "5.3.4")   # header block over max_header_size
    else:
        hdr = b"".join(b"X-F%07d: %s\r\n" % (i, b"v" * 80) for i in range(10 * MB // 92))
        want = (552, "5.3.4")
    msg = hdr + b"Subject: big header\r\n\r\nbody\r\n.\r\n"
    with gw.client(timeout=scaled(60)) as c:
        c.ehlo()
        start_data(c)
        t = send_background(c, msg)
        r = c.reply(timeout=scaled(60))
        t.join(scaled(30))
        assert_reply(r, *want)
        assert_reply(c.cmd("NOOP"), 250)
    wait_for(lambda: not gw.incoming_files(), scaled(5), what="incoming/ empty")
    assert not gw.queue_ids()
    assert_still_serves(gw)


def test_small_header_limit_big_body_in_one_write(gateway):
    """max_header_size is a limit on the header block, not on how much
    arrives at once: with a small limit (5,000 bytes), a message with a
    header block just under it (4.4 KB) and a 200 KB body sent in one write
    is accepted whole (the limit used to be checked against everything
    buffered up to the end of the read the header's end arrived in), and a
    header block over the limit is still refused."""
    gw = gateway({"limits": {"max_header_size": "5000"}})
    body = (b"b" * 78 + b"\r\n") * 2500
    msg = (b"Subject: small header, big body\r\nFrom: a@example.net\r\n" +
           b"".join(b"X-H%03d: %s\r\n" % (i, b"v" * 80) for i in range(49)) + b"\r\n" + body)
    assert 4300 < msg.index(b"\r\n\r\n") < 4500
    with gw.client(timeout=scaled(30)) as c:
        c.ehlo()
        start_data(c)
        c.send(msg + b".\r\n")
        qid = queued_id(c.reply(timeout=scaled(30)))
        start_data(c)
        c.send(b"".join(b"X-F%03d: %s\r\n" % (i, b"v" * 80) for i in range(60)) +
               b"\r\nbody\r\n.\r\n")
        assert_reply(c.reply(timeout=scaled(30)), 552, "5.3.4")
    assert gw.wait_for_marker(b"small header, big body").endswith(body)
    assert qid


# ---------------------------------------------------------------- 100,000 RCPTs

def test_hundred_thousand_rcpts(gateway):
    """100,000 pipelined RCPTs in big writes: the first max_recipients get
    250, every other one 452 4.5.3, each exactly one reply; the message then
    goes to max_recipients recipients, once."""
    limit = 100
    n = 100000
    gw = gateway({"limits": {"max_recipients": str(limit), "command_timeout": "60s"}})
    msg, marker = make_message()
    with gw.client(timeout=scaled(60)) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        blob = b"".join(b"RCPT TO:<u%d@example.test>\r\n" % i for i in range(n))
        t = send_background(c, blob)
        codes = {}
        for i in range(n):
            r = c.reply(timeout=scaled(30))
            want = (250, "2.1.5") if i < limit else (452, "4.5.3")
            assert (r.code, r.enh) == want, f"RCPT #{i}: {r}"
            codes[r.code] = codes.get(r.code, 0) + 1
        t.join(scaled(30))
        assert codes == {250: limit, 452: n - limit}
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        qid = queued_id(c.reply())
    eml = gw.wait_for_marker(marker)
    assert qid.encode() in eml
    env = gw.envelope_text(qid) if qid in gw.queue_ids() else None
    if env is not None:
        assert env.count("\nrcpt: ") == limit
    assert_still_serves(gw)


def test_recipients_never_make_an_unreadable_envelope(gateway):
    """With max_recipients raised to its maximum, 20,000 RCPTs of 200+
    characters would make an envelope over the 4 MiB the start-up scan
    reads (QUEUE_ENVELOPE_MAX): the 250'd message would be moved to
    corrupt/ at the next start - lost.  mxgate answers 452 4.5.3 before
    that; the message it acknowledges survives a restart."""
    gw = gateway({"limits": {"max_recipients": "100000", "command_timeout": "60s"},
                  "route default": {"type": "smtp", "directory": None,
                                    "hosts": "127.0.0.1:9", "tls": "none",
                                    "connect_timeout": "1s"}})
    n = 20000
    local = "r" * 200
    with gw.client(timeout=scaled(60)) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        blob = b"".join(b"RCPT TO:<%s%d@example.test>\r\n" % (local.encode(), i)
                        for i in range(n))
        t = send_background(c, blob)
        codes = {}
        for i in range(n):
            r = c.reply(timeout=scaled(30))
            assert (r.code, r.enh) in ((250, "2.1.5"), (452, "4.5.3")), f"RCPT #{i}: {r}"
            codes[r.code] = codes.get(r.code, 0) + 1
        t.join(scaled(30))
        assert codes.get(250, 0) >= 1000, codes
        assert_reply(c.cmd("DATA"), 354)
        c.send(make_message()[0] + b".\r\n")
        qid = queued_id(c.reply(timeout=scaled(30)))
    gw.restart()
    corrupt = gw.queue_dir / "corrupt"
    assert not corrupt.is_dir() or not any(corrupt.iterdir()), \
        f"an acknowledged message was set aside as unreadable: {list(corrupt.iterdir())}"
    assert qid in gw.queue_ids(), f"{qid} lost at start-up"


def test_repeated_rcpts_counted_once(gateway):
    """20,000 distinct recipients, each given twice (the second time in
    upper case), pipelined: every RCPT gets 250 and the envelope holds each
    address once, in the order first given.  (Duplicates are found through
    a hash index; a linear search here was 200 million comparisons.)  A
    repeated RCPT is a junk command (smtp-defence.c), so the junk limit is
    raised here; the default cuts such a flood at 100."""
    gw = gateway({"limits": {"max_recipients": "100000", "command_timeout": "60s",
                             "junk_command_limit": "100000"},
                  "route default": {"type": "smtp", "directory": None,
                                    "hosts": "127.0.0.1:9", "tls": "none",
                                    "connect_timeout": "1s"}})
    n = 20000
    addrs = [b"dup%d@example.test" % i for i in range(n)]
    with gw.client(timeout=scaled(60)) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        blob = b"".join(b"RCPT TO:<%s>\r\n" % a for a in addrs)
        blob += b"".join(b"RCPT TO:<%s>\r\n" % a.upper() for a in addrs)
        t = send_background(c, blob)
        for i in range(2 * n):
            r = c.reply(timeout=scaled(30))
            assert (r.code, r.enh) == (250, "2.1.5"), f"RCPT #{i}: {r}"
        t.join(scaled(30))
        assert_reply(c.cmd("DATA"), 354)
        c.send(make_message()[0] + b".\r\n")
        qid = queued_id(c.reply(timeout=scaled(30)))
    env = gw.envelope_text(qid)
    rcpts = [ln.split(" ", 2)[2] for ln in env.splitlines() if ln.startswith("rcpt: ")]
    assert rcpts == [f"<{a.decode()}>" for a in addrs]


# ---------------------------------------------------------------- NUL, invalid UTF-8

@pytest.mark.parametrize("line,code", [
    (b"EHLO a\x00b", 500),
    (b"\x00EHLO x", 500),
    (b"MAIL FROM:<a\x00@example.net>", 500),
    (b"RCPT TO:<user@example.test>\x00", 500),
    (b"NOOP\x00\x00\x00", 500),
])
def test_nul_in_command(gateway, line, code):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        c.send(line + b"\r\n")
        r = c.reply()
        assert r.code == code, f"{line!r}: {r}"
        assert c.pending(0.2) == b""
        assert_reply(c.cmd("NOOP"), 250)
    assert_still_serves(gw)


@pytest.mark.parametrize("mail", [
    b"MAIL FROM:<\xff\xfe@example.net> SMTPUTF8",           # not UTF-8 at all
    b"MAIL FROM:<\xc3@example.net> SMTPUTF8",               # truncated sequence
    b"MAIL FROM:<\xc0\xaf@example.net> SMTPUTF8",           # overlong
    b"MAIL FROM:<\xed\xa0\x80@example.net> SMTPUTF8",       # surrogate
    b"MAIL FROM:<j\xc3\xb6rg@example.net>",                 # UTF-8 without SMTPUTF8
])
def test_invalid_utf8_in_mail_from(gateway, mail):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        c.send(mail + b"\r\n")
        r = c.reply()
        assert str(r.code)[0] == "5", f"{mail!r} accepted: {r}"
        assert_reply(c.cmd("NOOP"), 250)
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)   # no transaction was left open
    assert_still_serves(gw)


@pytest.mark.parametrize("rcpt", [
    b"RCPT TO:<\xff@example.test>",
    b"RCPT TO:<us\xc3er@example.test>",
    b"RCPT TO:<user@ex\xffample.test>",
])
def test_invalid_utf8_in_rcpt(gateway, rcpt):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}> SMTPUTF8"), 250)
        c.send(rcpt + b"\r\n")
        r = c.reply()
        assert str(r.code)[0] == "5", f"{rcpt!r} accepted: {r}"
        assert_reply(c.cmd("DATA"), 554, "5.5.1")            # nothing was accepted
    assert_still_serves(gw)


def test_nul_in_header_refused(gateway):
    gw = gateway()
    msg, marker = make_message(headers=["X-Evil: a\x00b"])
    with gw.client() as c:
        c.ehlo()
        start_data(c)
        c.send(msg + b".\r\n")
        assert_reply(c.reply(), 550, "5.6.0")
        assert_reply(c.cmd("NOOP"), 250)
    assert not gw.queue_ids()
    assert_still_serves(gw)
    assert not gw.find_in_mailbox(marker)


def test_invalid_utf8_in_header_kept_verbatim(gateway):
    """8-bit garbage in a header is the sender's problem, not a protocol
    error: accepted and delivered byte for byte (never "repaired" into
    something else), and it cannot start a new header field."""
    gw = gateway()
    raw = b"X-Garbage: \xff\xfe\xc3(\xed\xa0\x80 \xe2\x80\xa8X-Injected: no\r\n"
    msg, marker = make_message()
    msg = msg.replace(b"\r\n\r\n", b"\r\n" + raw + b"\r\n", 1)
    with gw.client() as c:
        c.ehlo()
        qid = queued_id(c.transaction(SENDER, [RCPT], msg))
    eml = gw.wait_for_marker(marker)
    assert raw in eml
    assert not header_values(eml, "X-Injected")
    assert qid.encode() in eml


# ---------------------------------------------------------------- header injection

@pytest.mark.parametrize("cmd,code", [
    ("MAIL FROM:<a@example.net> ENVID=x\rX-Injected:1", 500),     # bare CR
    ("MAIL FROM:<a@example.net>\nX-Injected: 1", 500),            # bare LF
    ("MAIL FROM:<a@example.net> RET=FULL", 555),
    ("MAIL FROM:<a@example.net> ENVID=QQ+0D+0AX-Injected:+201", 555),
    ("MAIL FROM:<a@example.net> AUTH=<>", 555),
    ("MAIL FROM:<a@example.net> BODY=8BITMIME\tX-Injected:1", 501),
    ("MAIL FROM:<a@example.net> SIZE=1\x0bX-Injected:1", 501),
    ('MAIL FROM:<"a\\"\r\nX-Injected: 1"@example.net>', 501),
    ("MAIL FROM:<a@example.net>\x0cX-Injected: 1", 501),
    ("MAIL FROM:<a@exa\rmple.net>", 500),
])
def test_header_injection_in_mail(gateway, cmd, code):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        c.send(cmd.encode("latin-1") + b"\r\n")
        r = c.reply()
        assert str(r.code)[0] == "5", f"{cmd!r} accepted: {r}"
        assert r.code == code, f"{cmd!r}: {r}"
        c.pending(0.3)      # the tail of a line split by the CR/LF, if any
        assert_reply(c.cmd("RSET"), 250)
        msg, marker = make_message()
        c.transaction(SENDER, [RCPT], msg)
    eml = gw.wait_for_marker(marker)
    assert b"X-Injected" not in eml


@pytest.mark.parametrize("cmd", [
    "RCPT TO:<user@example.test> NOTIFY=NEVER",
    "RCPT TO:<user@example.test> ORCPT=rfc822;x+0D+0AX-Injected:+1",
    "RCPT TO:<user@example.test> X-Injected=1",
    "RCPT TO:<user@example.test>\x0bX-Injected: 1",
])
def test_header_injection_in_rcpt(gateway, cmd):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        r = c.cmd(cmd)
        assert str(r.code)[0] == "5", f"{cmd!r} accepted: {r}"
        assert_reply(c.cmd("DATA"), 554, "5.5.1")
    assert_still_serves(gw)


def test_odd_but_legal_sender_cannot_inject(gateway):
    """A quoted local part may hold spaces, ';', '(' and '>' (RFC 5321
    4.1.2); it is accepted, and the delivered message still has exactly our
    trace header on top and no field made from the sender's text."""
    gw = gateway()
    sender = '"x>; X-Injected: 1 (a"@example.net'
    msg, marker = make_message()
    with gw.client() as c:
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<{sender}>")
        if r.code != 250:
            assert str(r.code)[0] == "5"
            return
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        queued_id(c.reply())
    eml = gw.wait_for_marker(marker)
    assert not header_values(eml, "X-Injected")
    assert header_values(eml, "Received")[0].startswith("from client.example.net ")
    assert len(header_values(eml, "Received")) == 1


@pytest.mark.parametrize("helo", ["a\rX-Injected:1", "x(y", "evil.example;by", "[127.0.0.1]",
                                  "\xff\xfe\xc3(.example", "a\x0bX-Injected:1", "x)(y\x7f"])
def test_helo_cannot_inject(gateway, helo):
    gw = gateway()
    msg, marker = make_message()
    with gw.client() as c:
        c.send(f"EHLO {helo}\r\n".encode("latin-1"))
        r = c.reply()
        if r.code != 250:
            assert str(r.code)[0] == "5", f"EHLO {helo!r}: {r}"
            c.pending(0.3)
            c.ehlo()
        c.transaction(SENDER, [RCPT], msg)
    eml = gw.wait_for_marker(marker)
    assert not header_values(eml, "X-Injected")
    top = eml.split(b"\r\n\r\n", 1)[0]
    assert b"\r" not in top.replace(b"\r\n", b"")
    ours = header_values(eml, "Received")[0]
    assert all(0x20 <= ord(ch) < 0x7f or ch == "\t" for ch in ours), \
        f"control or 8-bit bytes from HELO in our Received: {ours!r}"
    assert header_values(eml, "Received")[0].count("[127.0.0.1]") >= 1


# ---------------------------------------------------------------- relay attempts

RELAY_TRICKS = [
    "user%elsewhere.test@example.test",          # %-hack
    "elsewhere.test!user@example.test",          # bang path
    "user!elsewhere.test@example.test",
    "@example.test,@relay.test:user@elsewhere.test",   # source route to elsewhere
    "@example.test:user@elsewhere.test",
    '"user@elsewhere.test"@example.test',        # quoted local part with @
    '"user%elsewhere.test"@example.test',
    '"user!elsewhere.test"@example.test',
    "user@example.test@elsewhere.test",          # two @
    "user@elsewhere.test@example.test",
    "user@elsewhere.test",                       # plain relay
    "user@sub.example.test",                     # subdomain not accepted
    "user@example.test.elsewhere.test",
    "user@[127.0.0.1]",                          # address literal
    "user@[IPv6:::1]",
    "user@example.test.",                        # trailing dot
    "user@localhost",
    "user",                                      # no domain
    "<user@elsewhere.test>",
    "user@example.test>,<user@elsewhere.test",
    "user@elsewhere.test (user@example.test)",
]


@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_relay_attempt_refused(gateway, rcpt):
    gw = gateway()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        assert str(r.code)[0] == "5", f"RCPT TO:<{rcpt}> accepted: {r}"
        assert_reply(c.cmd("DATA"), 554, "5.5.1")
        assert_reply(c.cmd("RSET"), 250)


def test_relay_attempts_pipelined_nothing_delivered(gateway):
    """Every trick in one pipelined transaction: all refused, DATA refused,
    nothing queued; then a legal source route to us is accepted and lands
    at the plain address (RFC 5321 C: the route is dropped)."""
    gw = gateway({"limits": {"max_errors": "1000"}})
    with gw.client() as c:
        c.ehlo()
        lines = [f"MAIL FROM:<{SENDER}>"] + [f"RCPT TO:<{r}>" for r in RELAY_TRICKS] + ["DATA"]
        c.send("".join(x + "\r\n" for x in lines))
        assert_reply(c.reply(), 250)
        for r in RELAY_TRICKS:
            rep = c.reply()
            assert str(rep.code)[0] == "5", f"RCPT TO:<{r}> accepted: {rep}"
        assert_reply(c.reply(), 554, "5.5.1")
    assert not gw.queue_ids()
    msg, marker = make_message()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<@relay.test,@other.test:user@example.test>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        qid = queued_id(c.reply())
    eml = gw.wait_for_marker(marker)
    assert b"for <user@example.test>" in eml
    assert qid.encode() in eml
    assert len(gw.mailbox_files()) == 1
