"""Connection-level defence, part 1 (issue 17): sessions that hold slots
without sending mail.

Junk commands (NOOP, RSET, VRFY, HELP) counted against junk_command_limit,
a queued message starting the count again; max_transactions; the lifetime
cap max_session_time (idle, and in the middle of a message, which is
finished first); stress mode above stress_threshold percent of
max_connections shortening the idle timeout of every session."""

import time

from mxtest import RawClient, assert_reply, make_message, queued_id, scaled

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def assert_still_serves(gw):
    msg, marker = make_message(subject="after-abuse")
    gw.send(SENDER, [RCPT], msg)
    gw.wait_for_marker(marker)


def test_junk_command_flood_is_cut(gateway):
    """NOOP/RSET/VRFY/HELP beyond junk_command_limit: 421 4.7.0 and close,
    logged with the reason."""
    gw = gateway({"limits": {"junk_command_limit": "6"}})
    with gw.client() as c:
        c.ehlo()
        for cmd in ["NOOP", "RSET", f"VRFY {RCPT}", "HELP", "NOOP", "NOOP"]:
            r = c.cmd(cmd)
            assert r.code in (250, 252, 214), f"{cmd}: {r}"
        assert_reply(c.cmd("NOOP"), 421, "4.7.0")
        c.wait_closed(scaled(5))
    gw.wait_log(r"cut client=127\.0\.0\.1 reason=junk_commands junk=7")
    assert_still_serves(gw)


def test_junk_flood_pipelined_default_limit(gateway):
    """The default limit (100): a pipelined flood of 1,000 NOOPs gets 100
    answers, then 421, then nothing."""
    gw = gateway()
    with gw.client(timeout=scaled(20)) as c:
        c.ehlo()
        c.send(b"NOOP\r\n" * 1000)
        for _ in range(100):
            assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 421, "4.7.0")
        assert c.wait_closed(scaled(10)) == b""


def test_queued_message_restarts_junk_count(gateway):
    """An MTA that sends RSET between messages is working, not squatting:
    the count starts again after each queued message."""
    gw = gateway({"limits": {"junk_command_limit": "3"}})
    with gw.client() as c:
        c.ehlo()
        for _ in range(3):
            msg, _marker = make_message()
            assert_reply(c.cmd("RSET"), 250)
            assert_reply(c.cmd("NOOP"), 250)
            assert_reply(c.cmd("NOOP"), 250)
            queued_id(c.transaction(SENDER, [RCPT], msg))
        assert_reply(c.cmd("NOOP"), 250)
        assert_reply(c.cmd("NOOP"), 250)
        assert_reply(c.cmd("NOOP"), 250)
        assert_reply(c.cmd("NOOP"), 421, "4.7.0")


def test_max_transactions(gateway):
    """The MAIL after max_transactions gets 421 and the connection closes;
    the messages before it were queued."""
    gw = gateway({"limits": {"max_transactions": "2"}})
    with gw.client() as c:
        c.ehlo()
        msg, marker = make_message()
        queued_id(c.transaction(SENDER, [RCPT], msg))
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RSET"), 250)
        r = c.cmd(f"MAIL FROM:<{SENDER}>")
        assert_reply(r, 421, "4.7.0")
        assert "reconnect" in r.text, r
        c.wait_closed(scaled(5))
    gw.wait_for_marker(marker)
    gw.wait_log(r"reason=transactions")


def test_max_session_time_idle(gateway):
    """An idle session (well inside command_timeout) is closed when
    max_session_time is up."""
    gw = gateway({"limits": {"max_session_time": "2s", "command_timeout": "5m"}})
    with gw.client() as c:
        c.ehlo()
        assert c.pending(0.5) == b""
        r = c.reply(timeout=scaled(10))
        assert_reply(r, 421, "4.7.0")
        assert "session too long" in r.text, r
        c.wait_closed(scaled(5))
    gw.wait_log(r"reason=session_time")


def test_max_session_time_cuts_a_dripped_tls_handshake(gateway, test_ca):
    """A ClientHello dripped a byte at a time after STARTTLS renews
    command_timeout at each byte; max_session_time still ends it (closed
    without a reply: none can be sent inside a handshake)."""
    gw = gateway({"limits": {"max_session_time": "2s", "command_timeout": "5m"}},
                 tls=test_ca)
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 200
    with RawClient(gw.port) as c:
        c.ehlo()
        assert_reply(c.cmd("STARTTLS"), 220)
        sent = 0
        deadline = time.monotonic() + scaled(15)
        while time.monotonic() < deadline:
            try:
                c.send(hello[sent:sent + 1])
            except OSError:
                break
            sent += 1
            if c.is_closed(0.3):
                break
        assert time.monotonic() < deadline, "the dripping handshake was never cut"
        assert sent >= 3, sent
    gw.wait_log(r"reason=session_time .*in=tls_handshake")


def test_max_session_time_finishes_the_message_first(gateway):
    """The lifetime ends while a message is being sent: the message is
    received and queued, and the next command gets the 421."""
    gw = gateway({"limits": {"max_session_time": "2s", "command_timeout": "5m"}})
    msg, marker = make_message()
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg[:20])
        time.sleep(scaled(3))            # max_session_time passes inside DATA
        c.send(msg[20:] + b".\r\n")
        queued_id(c.reply())
        assert_reply(c.cmd("NOOP"), 421, "4.7.0")
        c.wait_closed(scaled(5))
    gw.wait_for_marker(marker)


def test_stress_mode_shortens_idle_timeouts(gateway):
    """max_connections 4, stress_threshold 50%: two idle sessions keep their
    long command_timeout; the third session turns stress mode on and every
    idle session is cut after stress_command_timeout."""
    gw = gateway({"limits": {"max_connections": "4", "stress_threshold": "50",
                             "command_timeout": "5m", "stress_command_timeout": "1s"}})
    c1 = gw.client()
    c2 = gw.client()
    try:
        c1.ehlo()
        c2.ehlo()
        assert c1.pending(scaled(2.5)) == b"", "cut without stress"
        assert "stress on" not in gw.log_text()
        with gw.client() as c3:
            gw.wait_log(r"- stress on sessions=3 limit=4 threshold=50%")
            for c in (c1, c2, c3):
                assert_reply(c.reply(timeout=scaled(8)), 421, "4.4.2")
        c1.wait_closed(scaled(5))
        c2.wait_closed(scaled(5))
    finally:
        c1.close()
        c2.close()
    gw.wait_log(r"- stress off")
    # Out of stress again: a new idle session keeps the long timeout.
    with gw.client() as c:
        c.ehlo()
        assert c.pending(scaled(2.5)) == b""


def test_stress_mode_shortens_data_timeouts(gateway):
    """Red team: stress mode shortened only the idle time between commands;
    a message being received kept data_timeout (Postfix's stress
    smtpd_timeout covers DATA too), so dribbled DATAs kept their slots.
    The session in DATA is cut after stress_command_timeout as well."""
    gw = gateway({"limits": {"max_connections": "4", "stress_threshold": "50",
                             "command_timeout": "5m", "data_timeout": "5m",
                             "stress_command_timeout": "1s"}})
    c1 = gw.client()
    c2 = gw.client()
    try:
        c1.ehlo()
        assert_reply(c1.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c1.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c1.cmd("DATA"), 354)
        c1.send(b"Subject: slow\r\n")
        assert c1.pending(scaled(2.5)) == b"", "cut without stress"
        with gw.client() as c3:
            gw.wait_log(r"- stress on sessions=3 limit=4 threshold=50%")
            assert_reply(c1.reply(timeout=scaled(8)), 421, "4.4.2")
            c1.wait_closed(scaled(5))
            assert_reply(c3.reply(timeout=scaled(8)), 421, "4.4.2")
    finally:
        c1.close()
        c2.close()
    assert_still_serves(gw)


def test_stress_junk_limit(gateway):
    """In stress mode the junk limit drops to stress_junk_command_limit."""
    gw = gateway({"limits": {"max_connections": "2", "stress_threshold": "50",
                             "stress_junk_command_limit": "2"}})
    with gw.client() as c1, RawClient(gw.port) as c2:
        gw.wait_log(r"- stress on")
        c2.ehlo()
        assert_reply(c2.cmd("NOOP"), 250)
        assert_reply(c2.cmd("NOOP"), 250)
        assert_reply(c2.cmd("NOOP"), 421, "4.7.0")
        c1.ehlo()


def test_max_session_time_cuts_a_dribbled_message(gateway):
    """Red team: data_timeout bounds only the pause between two reads, so
    a client dribbling a byte now and then kept its DATA - and its slot -
    open for ever, past max_session_time.  The message in progress gets
    data_timeout more to finish, then 421 and close."""
    gw = gateway({"limits": {"max_session_time": "2s", "data_timeout": "3s",
                             "command_timeout": "5m"}})
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(b"Subject: slow\r\n\r\n")
        deadline = time.monotonic() + scaled(20)
        got = b""
        while time.monotonic() < deadline and b"421" not in got:
            try:
                c.send(b"x")             # one byte a second: never idle 3 s
            except OSError:
                break
            got += c.pending(1.0)
        assert b"421 4.7.0" in got and b"session too long" in got, got
        c.wait_closed(scaled(5))
    gw.wait_log(r"cut client=127\.0\.0\.1 reason=session_time")
    assert_still_serves(gw)


def test_repeated_rcpt_is_a_junk_command(gateway):
    """Red team: the same RCPT again is answered 250 and changes nothing -
    one every 25 s held a slot until max_session_time like NOOP did.  It
    counts as junk; a new recipient does not."""
    gw = gateway({"limits": {"junk_command_limit": "3"}})
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        assert_reply(c.cmd("RCPT TO:<other@example.test>"), 250)
        for _ in range(3):
            assert_reply(c.cmd(f"RCPT TO:<{RCPT.upper()}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 421, "4.7.0")
        c.wait_closed(scaled(5))
    gw.wait_log(r"cut client=127\.0\.0\.1 reason=junk_commands junk=4")
    assert_still_serves(gw)
