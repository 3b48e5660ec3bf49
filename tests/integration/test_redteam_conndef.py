"""Red team (issue 17): connection defence behind a trusted load balancer
(PROXY protocol).  The client address that counts is the one in the PROXY
header; the tests before the banner must still see what the client sent
with it, and an IPv4 client presented as an IPv4-mapped IPv6 address (what
HAProxy sends from a dual-stack "v4v6" bind) must be judged as IPv4."""

import time

from mxtest import RawClient, assert_reply, make_message, proxy_v1, proxy_v2, scaled

LB = {"trusted_proxies": "127.0.0.1/32"}


def rev(ip):
    return ".".join(reversed(ip.split(".")))


def test_early_talker_in_the_proxy_segment_is_refused(gateway):
    """The LB forwards the client's early EHLO in the same segment as the
    PROXY header: still talking before the greeting (554), not a pass."""
    gw = gateway({"access": LB, "pregreet": {"enabled": "yes", "greet_delay": "3s"}})
    with RawClient(gw.port, banner=False) as c:
        c.send(proxy_v1("192.0.2.9", "127.0.0.1") + b"EHLO early.example.net\r\n")
        rest = c.wait_closed(scaled(8))
        assert b"554 5.5.1" in rest, rest
        assert b"220 " not in rest, rest
    gw.wait_log(r"pregreet client=192\.0\.2\.9 result=early_talker")


def test_early_talker_after_the_proxy_header_is_refused(gateway):
    """The same, with the EHLO a moment after the header (separate read)."""
    gw = gateway({"access": LB, "pregreet": {"enabled": "yes", "greet_delay": "3s"}})
    with RawClient(gw.port, banner=False) as c:
        c.send(proxy_v1("192.0.2.10", "127.0.0.1"))
        first = c._line(time.monotonic() + scaled(5))
        assert first.startswith(b"220-"), first
        c.send(b"EHLO early.example.net\r\n")
        rest = c.wait_closed(scaled(8))
        assert b"554 5.5.1" in rest, rest
    gw.wait_log(r"pregreet client=192\.0\.2\.10 result=early_talker")


def _dnsbl_gw(gateway):
    extra = {"access": LB,
             "dnsbl": {"sites": "zen.test=127.0.0.[2..11]*3", "decide_at": "connect",
                       "reject_threshold": "3"}}
    gw = gateway(extra, start=False)
    gw.dns.add(rev("192.0.2.66") + ".zen.test", "A", "127.0.0.4")
    return gw.start()


def test_listed_client_behind_proxy_v1_is_refused(gateway):
    gw = _dnsbl_gw(gateway)
    with RawClient(gw.port, banner=False) as c:
        c.send(proxy_v1("192.0.2.66", "127.0.0.1"))
        r = c.reply(timeout=scaled(10))
        assert_reply(r, 554, "5.7.1")
        assert "client [192.0.2.66] blocked using zen.test" in r.text, r


def test_listed_ipv4_client_as_mapped_ipv6_behind_proxy_v2_is_refused(gateway):
    """PROXY v2, AF_INET6, source ::ffff:192.0.2.66: the DNSBL must be asked
    about 192.0.2.66 (in-addr style), not the ip6 nibbles of the mapped
    address, which no list has."""
    gw = _dnsbl_gw(gateway)
    with RawClient(gw.port, banner=False) as c:
        c.send(proxy_v2("::ffff:192.0.2.66", "::ffff:127.0.0.1"))
        r = c.reply(timeout=scaled(10))
        assert_reply(r, 554, "5.7.1")
        assert "blocked using zen.test" in r.text, r


def test_sender_rate_is_not_bypassed_by_letter_case(gateway):
    """messages_per_sender counts one envelope sender: MAIL FROM:<Spam@X>
    <spam@x> <SPAM@X> is one sender to any mail system (domains are
    case-insensitive; mailbox local parts are in practice), so changing the
    case must not buy a fresh budget.  (Counted when accepted, checked at
    the first RCPT; without SPF per sender and network - one /24 here.)"""
    gw = gateway({"ratelimit": {"window": "1h", "messages_per_sender": "2"}})
    senders = ["Spam@Flood.example", "spam@flood.example"]
    for i, snd in enumerate(senders):
        with RawClient(gw.port, source=f"127.0.0.{i + 2}") as c:
            c.ehlo()
            msg, _m = make_message()
            c.transaction(snd, [f"u{i}@example.test"], msg)
    with RawClient(gw.port, source="127.0.0.4") as c:
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<SPAM@FLOOD.EXAMPLE>"), 250)
        r = c.cmd("RCPT TO:<u2@example.test>")
    assert_reply(r, 451, "4.7.1")
    assert "<SPAM@FLOOD.EXAMPLE>" in r.text, r


def test_repeated_ehlo_is_a_junk_command(gateway):
    """NOOP is counted as junk, and in stress mode cut after
    stress_junk_command_limit; a slot holder that sends EHLO instead (it
    also resets the idle timer) must not stay for the whole
    max_session_time.  The first EHLO (and the one after STARTTLS) is free;
    each further HELO/EHLO counts."""
    gw = gateway({"limits": {"max_connections": "2", "stress_threshold": "50",
                             "stress_junk_command_limit": "2"}})
    with gw.client() as c1, RawClient(gw.port) as c2:
        gw.wait_log(r"- stress on")
        assert_reply(c2.ehlo(), 250)
        assert_reply(c2.ehlo(), 250)
        assert_reply(c2.ehlo(), 250)
        r = c2.cmd("EHLO client.example.net")
        assert_reply(r, 421, "4.7.0")
        c1.ehlo()
