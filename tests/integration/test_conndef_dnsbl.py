"""Connection-level defence, part 2 (issue 17): DNSBL/DNSWL with weights and
thresholds, decided at connect or at RCPT.

The gateway's test DNS server (StubDns on loopback) serves the zones; each
scenario connects from its own 127.0.0.x source address:

    127.0.0.1   not listed anywhere
    127.0.0.2   zen.test 127.0.0.4 (weight 3: rejected)
    127.0.0.3   zen.test and small.test (no filter) 127.255.255.254 (query
                refused: no data, never listed)
    127.0.0.4   zen.test 127.0.0.4 and wl.test 127.0.10.2 (3 - 5: allowed)
    127.0.0.5   zen.test 127.0.0.12 (outside the filter [2..11])
    127.0.0.6   small.test 127.0.0.2 (weight 1: tagged, not rejected)
    127.0.0.7   zen.test 127.0.0.4, plus slow.test which never answers
    ::1         zen.test 127.0.0.2 in nibble format (IPv6)
"""

import time

import pytest

from mxtest import RawClient, assert_reply, header_values, make_message, scaled

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
SITES = "zen.test=127.0.0.[2..11]*3, wl.test=127.0.[0..255].[1..3]*-5, small.test*1"
V6_REV = ".".join(reversed("0" * 31 + "1"))   # ::1 in nibble format


def rev(ip):
    return ".".join(reversed(ip.split(".")))


def listings(dns):
    dns.add(rev("127.0.0.2") + ".zen.test", "A", "127.0.0.4")
    dns.add(rev("127.0.0.3") + ".zen.test", "A", "127.255.255.254")
    # small.test has no filter: only the 127.255.255.0/24 rule keeps this
    # refusal from counting (zen.test's filter [2..11] would hide it anyway)
    dns.add(rev("127.0.0.3") + ".small.test", "A", "127.255.255.254")
    dns.add(rev("127.0.0.4") + ".zen.test", "A", "127.0.0.4")
    dns.add(rev("127.0.0.4") + ".wl.test", "A", "127.0.10.2")
    dns.add(rev("127.0.0.5") + ".zen.test", "A", "127.0.0.12")
    dns.add(rev("127.0.0.6") + ".small.test", "A", "127.0.0.2")
    dns.add(rev("127.0.0.7") + ".zen.test", "A", "127.0.0.4")
    dns.add(V6_REV + ".zen.test", "A", "127.0.0.2")
    dns.blackhole("slow.test")


def make(gateway, decide="connect", sites=SITES, dns=None, **kw):
    extra = {"dnsbl": {"sites": sites, "decide_at": decide, "reject_threshold": "3",
                       "tag_threshold": "1"}}
    if dns:
        extra["dns"] = dns
    gw = gateway(extra, start=False, **kw)
    listings(gw.dns)
    return gw.start()


@pytest.fixture
def gw(gateway):
    return make(gateway)


def test_listed_client_refused_at_connect(gw):
    """Weight 3 reaches reject_threshold 3: 554 instead of the banner."""
    c = RawClient(gw.port, source="127.0.0.2", banner=False)
    with c:
        r = c.reply(timeout=scaled(10))
        assert_reply(r, 554, "5.7.1")
        assert r.text == ("5.7.1 Service unavailable; client [127.0.0.2] blocked using "
                          "zen.test"), r
        c.wait_closed(scaled(5))
    gw.wait_log(r"refused client=127\.0\.0\.2 reason=dnsbl site=zen\.test score=3")
    gw.wait_log(r"dnsbl client=127\.0\.0\.2 score=3 listed=zen\.test=127\.0\.0\.4 failed=0")


def test_unlisted_client_served(gw):
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.1")
    gw.wait_for_marker(marker)
    gw.wait_log(r"dnsbl client=127\.0\.0\.1 score=0 listed=- failed=0")


def test_query_refused_answer_is_not_a_listing(gw):
    """127.255.255.254 is Spamhaus' "query refused" answer: no data, even
    from small.test, whose sites entry has no filter (any 127/8 answer
    counts) - so this fails if config_dnsbl_is_listing lets it through."""
    with RawClient(gw.port, source="127.0.0.3") as c:
        assert_reply(c.banner, 220)
    gw.wait_log(r"dnsbl client=127\.0\.0\.3 score=0 listed=- failed=0")
    assert gw.dns.count(rev("127.0.0.3") + ".small.test") == 1


def test_allowlist_weight_cancels_listing(gw):
    """A DNSWL listing (weight -5) outweighs the DNSBL listing (3)."""
    with RawClient(gw.port, source="127.0.0.4") as c:
        assert_reply(c.banner, 220)
    gw.wait_log(r"dnsbl client=127\.0\.0\.4 score=-2 listed=zen\.test=127\.0\.0\.4,"
                r"wl\.test=127\.0\.10\.2")


def test_return_code_outside_filter(gw):
    with RawClient(gw.port, source="127.0.0.5") as c:
        assert_reply(c.banner, 220)
    gw.wait_log(r"dnsbl client=127\.0\.0\.5 score=0 listed=-")


def test_below_reject_threshold_is_tagged(gw):
    """small.test (weight 1) reaches tag_threshold 1, not reject_threshold:
    the message is accepted and its spam score names the zone."""
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.6")
    m = gw.wait_for_marker(marker)
    st = header_values(m, "X-Spam-Status")[0]
    assert "DNSBL_small.test" in st, st


def test_untagged_client_has_no_dnsbl_rule(gw):
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.1")
    m = gw.wait_for_marker(marker)
    st = header_values(m, "X-Spam-Status")[0]
    assert "DNSBL" not in st, st


def test_timeout_zone_is_no_data_and_others_still_decide(gateway):
    """A zone that never answers costs at most the DNS timeout; the client
    is judged on the other zones (here: still refused), the failure logged."""
    gw = make(gateway, sites=SITES + ", slow.test*10")
    with RawClient(gw.port, source="127.0.0.7", banner=False) as c:
        assert_reply(c.reply(timeout=scaled(15)), 554, "5.7.1")
    gw.wait_log(r"dnsbl client=127\.0\.0\.7 score=3 listed=zen\.test=127\.0\.0\.4 failed=1")
    # An unlisted client waits for the timeout too, then is served.
    with RawClient(gw.port, source="127.0.0.1", timeout=scaled(15)) as c:
        assert_reply(c.banner, 220)
    assert gw.dns.count(rev("127.0.0.1") + ".slow.test") >= 1


def test_zones_are_looked_up_in_parallel(gateway):
    """Three zones that never answer cost one [dns] timeout, not three: the
    queries are all in flight together.  Asked one after the other they
    would hold the banner at least 3 x timeout; the bound is 2 x timeout,
    a whole timeout of slack for a slow machine."""
    timeout = 2
    src = "127.0.0.8"
    zones = ("hole1.test", "hole2.test", "hole3.test")
    gw = gateway({"dnsbl": {"sites": ", ".join(z + "*1" for z in zones)},
                  "dns": {"timeout": f"{timeout}s"}}, start=False)
    # only this client's names never answer: the start-up probe (127.0.0.1)
    # gets its NXDOMAIN at once, so the resolver has seen no timeout before
    for zone in zones:
        gw.dns.blackhole(rev(src) + "." + zone)
    gw.start()
    t0 = time.monotonic()
    with RawClient(gw.port, source=src, banner=False, timeout=scaled(4 * timeout)) as c:
        assert_reply(c.reply(), 220)
        took = time.monotonic() - t0
    gw.wait_log(r"dnsbl client=127\.0\.0\.8 score=0 listed=- failed=3")
    for zone in zones:
        assert gw.dns.count(rev(src) + "." + zone) >= 1, zone
    assert took < 2 * timeout, f"banner after {took:.2f}s: the zones were asked in turn"


def test_answers_are_cached(gw):
    """A second connection from the same client asks no zone again."""
    for _ in range(3):
        with RawClient(gw.port, source="127.0.0.3") as c:
            assert_reply(c.banner, 220)
    gw.wait_log(r"dnsbl client=127\.0\.0\.3 score=0 listed=- failed=0 cached=3")
    assert gw.dns.count(rev("127.0.0.3") + ".zen.test") == 1
    assert gw.dns.count(rev("127.0.0.3") + ".wl.test") == 1


def test_all_zones_queried_at_accept(gw):
    """The lookups start when the client connects: before any command."""
    with RawClient(gw.port, source="127.0.0.1") as c:
        assert_reply(c.banner, 220)
        for zone in ("zen.test", "wl.test", "small.test"):
            assert gw.dns.count(rev("127.0.0.1") + "." + zone) == 1, zone


def test_decide_at_rcpt(gateway):
    """decide_at = rcpt: the banner and MAIL go through; every RCPT gets the
    554; an unlisted client is not affected."""
    gw = make(gateway, decide="rcpt")
    with RawClient(gw.port, source="127.0.0.2") as c:
        assert_reply(c.banner, 220)
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        r = c.cmd(f"RCPT TO:<{RCPT}>")
        assert_reply(r, 554, "5.7.1")
        assert "client [127.0.0.2] blocked using zen.test" in r.text, r
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 554, "5.7.1")
        assert_reply(c.cmd("QUIT"), 221)
    gw.wait_log(r"reject client=127\.0\.0\.2 from=<sender@client\.example\.net> reason=dnsbl")
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.1")
    gw.wait_for_marker(marker)


def test_decide_at_rcpt_refusals_are_junk(gateway):
    """Red team: a blocked client repeating RCPT (554 each time) held its
    slot until max_session_time; each refusal counts as a junk command."""
    gw = gateway({"dnsbl": {"sites": SITES, "decide_at": "rcpt", "reject_threshold": "3"},
                  "limits": {"junk_command_limit": "3"}}, start=False)
    listings(gw.dns)
    gw.start()
    with RawClient(gw.port, source="127.0.0.2") as c:
        assert_reply(c.banner, 220)
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        for _ in range(3):
            assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 554, "5.7.1")
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 421, "4.7.0")
        c.wait_closed(scaled(5))
    gw.wait_log(r"cut client=127\.0\.0\.2 reason=junk_commands junk=4")


def test_decide_at_rcpt_waits_for_slow_lookups(gateway):
    """RCPT waits for lookups still running (a slow zone), then decides."""
    gw = make(gateway, decide="rcpt", sites=SITES + ", slow.test*10")
    with RawClient(gw.port, source="127.0.0.7", timeout=scaled(15)) as c:
        assert_reply(c.banner, 220)
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 554, "5.7.1")


def test_ipv6_client_nibble_query(gateway):
    gw = make(gateway, ipv6=True)
    with gw.client("::1", banner=False) as c:
        r = c.reply(timeout=scaled(10))
        assert_reply(r, 554, "5.7.1")
        assert "client [::1] blocked using zen.test" in r.text, r
    assert gw.dns.count(V6_REV + ".zen.test") == 1


def test_spam_dnsbl_zones_share_the_connect_lookups(gateway):
    """[spam] dnsbl_zones (score only) is looked up at connect with the
    [dnsbl] sites, once, and still scores the message."""
    gw = gateway({"spam": {"dnsbl_zones": "zen.test"}}, start=False)
    listings(gw.dns)
    gw.start()
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.2")
    m = gw.wait_for_marker(marker)
    st = header_values(m, "X-Spam-Status")[0]
    assert "DNSBL_zen.test" in st, st
    assert gw.dns.count(rev("127.0.0.2") + ".zen.test") == 1
    # 127.255.255.254 is no listing for the score either
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.3")
    m = gw.wait_for_marker(marker)
    assert "DNSBL" not in header_values(m, "X-Spam-Status")[0]
