"""Connection-level defence, part 3 (issue 17): tests before the banner,
postscreen-style.

Greeting delay with a "220-" continuation (or silence), early talkers,
clients that pipeline before PIPELINING was offered, non-SMTP commands
(HTTP, proxy CONNECT, POP3 USER) and the pass cache that lets a client that
passed skip the delay next time."""

import time

import pytest

from mxtest import RawClient, assert_reply, make_message, scaled

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def pregreet(gateway, **kw):
    conf = {"enabled": "yes", "greet_delay": "2s"}
    conf.update(kw)
    return gateway({"pregreet": conf})


def read_until_closed(c, timeout):
    return c.wait_closed(timeout)


def test_continuation_then_banner_and_pass(gateway):
    """A patient client sees "220-" at once and the final 220 after the
    delay; it passes, and its next connection gets the banner at once."""
    gw = pregreet(gateway)
    with RawClient(gw.port, banner=False) as c:
        first = c._line(time.monotonic() + scaled(5))
        assert first == b"220-mx.example.test ESMTP\r\n", first
        assert c.pending(0.8) == b"", "final 220 before greet_delay"
        r = c.reply(timeout=scaled(6))
        assert_reply(r, 220)
        c.ehlo()
        msg, marker = make_message()
        c.transaction(SENDER, [RCPT], msg)
        assert_reply(c.cmd("QUIT"), 221)
    gw.wait_for_marker(marker)
    gw.wait_log(r"pregreet client=127\.0\.0\.1 result=pass")
    with RawClient(gw.port, banner=False) as c:
        # pass-cached: a plain one-line banner, no 220- and no delay
        first = c._line(time.monotonic() + scaled(1.5))
        assert first.startswith(b"220 mx.example.test ESMTP"), first
    gw.wait_log(r"pregreet client=127\.0\.0\.1 result=cached")


def test_pause_mode_sends_nothing_before_the_banner(gateway):
    gw = pregreet(gateway, greet_mode="pause")
    with RawClient(gw.port, banner=False) as c:
        assert c.pending(1.0) == b""
        r = c.reply(timeout=scaled(6))
        assert_reply(r, 220)
        assert r.raw.startswith(b"220 "), r


@pytest.mark.parametrize("mode", ["continuation", "pause"])
def test_early_talker_refused(gateway, mode):
    """A client that sends EHLO before the final 220 is refused at once."""
    # (the start-up probe waits at most 5 s for a banner: keep the delay below)
    gw = pregreet(gateway, greet_mode=mode, greet_delay="3s")
    with RawClient(gw.port, banner=False) as c:
        if mode == "continuation":
            assert c._line(time.monotonic() + scaled(5)).startswith(b"220-")
        c.send(b"EHLO early.example.net\r\n")
        rest = read_until_closed(c, scaled(8))
        assert b"554 5.5.1" in rest and b"talking before the greeting" in rest, rest
        assert b"220 " not in rest, rest     # refused before greet_delay ended
    gw.wait_log(r"result=early_talker")
    # not cached as passed: the next connection is tested again
    with RawClient(gw.port, banner=False) as c:
        if mode == "continuation":
            assert c._line(time.monotonic() + scaled(5)).startswith(b"220-")
        else:
            assert c.pending(1.0) == b""
    assert "result=cached" not in gw.log_text()


def test_bare_pipelining_refused(gateway):
    """EHLO and MAIL in one packet, before EHLO's answer offered
    PIPELINING: refused."""
    gw = pregreet(gateway, greet_delay="0s")
    with RawClient(gw.port) as c:
        assert_reply(c.banner, 220)
        c.send(f"EHLO bot.example.net\r\nMAIL FROM:<{SENDER}>\r\n")
        rest = read_until_closed(c, scaled(5))
        assert rest.startswith(b"554 5.5.1") and b"pipelining" in rest, rest
    gw.wait_log(r"result=bare_pipelining")


def test_pipelining_after_ehlo_is_fine(gateway):
    """Pipelining after EHLO's answer (RFC 2920) is legitimate."""
    gw = pregreet(gateway, greet_delay="0s")
    msg, marker = make_message()
    with RawClient(gw.port) as c:
        c.ehlo()
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n")
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 354)
        c.send(msg + b".\r\n")
        assert_reply(c.reply(), 250)
    gw.wait_for_marker(marker)


def test_pipelining_after_helo_refused(gateway):
    """HELO (not EHLO) never offers PIPELINING."""
    gw = pregreet(gateway, greet_delay="0s")
    with RawClient(gw.port) as c:
        assert_reply(c.cmd("HELO old.example.net"), 250)
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\n")
        rest = read_until_closed(c, scaled(5))
        assert rest.startswith(b"554 5.5.1"), rest


def test_pipelining_allowed_when_disabled(gateway):
    """Without [pregreet] enabled nothing changes (RFC 5321 3.1 clients that
    talk early are answered in order: test_hostile_conn)."""
    gw = gateway()
    with RawClient(gw.port) as c:
        c.send(f"EHLO a.example.net\r\nMAIL FROM:<{SENDER}>\r\n")
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 250)


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1", b"POST /cgi-bin/x HTTP/1.0",
                                  b"CONNECT mx.example.test:25 HTTP/1.1", b"USER admin",
                                  b"get /"])
def test_non_smtp_commands_refused(gateway, line):
    """HTTP, proxy and POP3 commands get 554 and the connection closes -
    by default, without [pregreet] enabled, also after EHLO."""
    gw = gateway()
    with RawClient(gw.port) as c:
        c.ehlo()
        c.send(line + b"\r\n")
        rest = read_until_closed(c, scaled(5))
        assert rest.startswith(b"554 5.5.1") and b"non-SMTP command" in rest, rest
    gw.wait_log(r"result=non_smtp_command")


def test_non_smtp_check_can_be_switched_off(gateway):
    gw = gateway({"pregreet": {"non_smtp_commands": "no"}})
    with RawClient(gw.port) as c:
        assert_reply(c.cmd("GET / HTTP/1.1"), 500)


def test_pregreet_with_dnsbl_wait(gateway):
    """The banner also waits for [dnsbl] lookups; a blocked client gets a
    clean 554 (no 220- first), an unlisted one the 220- and then the 220."""
    gw = gateway({"pregreet": {"enabled": "yes", "greet_delay": "1s"},
                  "dnsbl": {"sites": "zen.test*3"}}, start=False)
    gw.dns.add("2.0.0.127.zen.test", "A", "127.0.0.2")
    gw.start()
    with RawClient(gw.port, source="127.0.0.2", banner=False) as c:
        rest = read_until_closed(c, scaled(8))
        assert rest.startswith(b"554 5.7.1 Service unavailable; client [127.0.0.2]"), rest
    with RawClient(gw.port, source="127.0.0.3", banner=False) as c:
        assert c._line(time.monotonic() + scaled(5)).startswith(b"220-")
        assert_reply(c.reply(timeout=scaled(6)), 220)


@pytest.mark.parametrize("enabled", ["yes", "no"])
def test_talking_during_dnsbl_wait(gateway, enabled):
    """greet_delay 0: only the DNSBL lookups hold the banner (slow.test
    never answers: a whole [dns] timeout).  With [pregreet] enabled an EHLO
    sent during that wait is early talking - 554 5.5.1 at once, no banner;
    without it the client is answered in order (RFC 5321 3.1 leniency)."""
    gw = gateway({"pregreet": {"enabled": enabled, "greet_delay": "0s"},
                  "dnsbl": {"sites": "slow.test*1"}}, start=False)
    # only this client's name never answers (the start-up probe's gets
    # NXDOMAIN at once: the resolver has no timeouts to back off from)
    gw.dns.blackhole("3.0.0.127.slow.test")
    gw.start()
    with RawClient(gw.port, source="127.0.0.3", banner=False, timeout=scaled(10)) as c:
        c.send(b"EHLO early.example.net\r\n")
        if enabled == "yes":
            rest = read_until_closed(c, scaled(8))
            assert rest.startswith(b"554 5.5.1"), rest
            assert b"talking before the greeting" in rest and b"220" not in rest, rest
        else:
            assert_reply(c.reply(), 220)
            assert_reply(c.reply(), 250)
    if enabled == "yes":
        gw.wait_log(r"pregreet client=127\.0\.0\.3 result=early_talker")
    else:
        assert "result=early_talker" not in gw.log_text()


def test_pass_cache_survives_a_restart(gateway, workdir):
    """With pass_cache_file, a client that passed before a restart gets the
    banner at once after it; without the file it would be tested again."""
    cache = workdir / "pregreet.cache"
    gw = pregreet(gateway, pass_cache_file=str(cache))
    with RawClient(gw.port, source="127.0.0.2") as c:    # waits out the delay
        c.ehlo()
        assert_reply(c.cmd("QUIT"), 221)
    gw.wait_log(r"pregreet client=127\.0\.0\.2 result=pass")
    gw.stop()
    lines = cache.read_text().splitlines()
    assert lines[0] == "mxgate-pregreet-pass 1", lines
    assert any(line.endswith(" 127.0.0.2") for line in lines[1:]), lines
    gw.start()
    gw.wait_log(r"pregreet cache file=.* loaded=1")
    with RawClient(gw.port, source="127.0.0.2", banner=False) as c:
        first = c._line(time.monotonic() + scaled(1.5))
        assert first.startswith(b"220 mx.example.test ESMTP"), first
    gw.wait_log(r"pregreet client=127\.0\.0\.2 result=cached")
