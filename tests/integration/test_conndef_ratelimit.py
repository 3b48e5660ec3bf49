"""Connection-level defence, part 4 (issue 17): rate limits - connections,
messages and recipients - per client address, per network (/24), per
envelope sender and per recipient domain,
and the per-network concurrency cap, with 421/451 replies that say when to
retry.  Floods from loopback sources 127.0.0.x (127.0.1.x is another /24)."""

import re

from mxtest import RawClient, assert_reply, make_message, scaled

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def rl(gateway, auth_spf=False, **kw):
    conf = {"window": "1h"}
    conf.update({k: str(v) for k, v in kw.items()})
    extra = {"ratelimit": conf, "domains": {"accepted_domains": "example.test, other.test"}}
    if auth_spf:
        extra["auth"] = {"spf": "yes"}
    return gateway(extra)


def retry_seconds(text):
    m = re.search(r"try again in (\d+) seconds", text)
    assert m, text
    return int(m.group(1))


def test_connection_rate_per_ip(gateway):
    gw = rl(gateway, connections_per_ip=3)
    for _ in range(3):
        with RawClient(gw.port, source="127.0.0.2") as c:
            assert_reply(c.banner, 220)
    with RawClient(gw.port, source="127.0.0.2", banner=False) as c:
        r = c.reply(timeout=scaled(5))
        assert_reply(r, 421, "4.7.0")
        assert "Too many connections from [127.0.0.2]" in r.text, r
        assert 0 < retry_seconds(r.text) <= 3600
        c.wait_closed(scaled(5))
    gw.wait_log(r"ratelimit client=127\.0\.0\.2 limit=connections_per_ip .*count=4 max=3")
    # another address is not affected
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.3")
    gw.wait_for_marker(marker)


def test_connection_rate_per_net(gateway):
    """Four addresses of one /24 share its budget; another /24 does not.
    (127.0.2.0/24: the start-up probe comes from 127.0.0.1.)"""
    gw = rl(gateway, connections_per_net=3)
    for src in ("127.0.2.2", "127.0.2.3", "127.0.2.4"):
        with RawClient(gw.port, source=src) as c:
            assert_reply(c.banner, 220)
    with RawClient(gw.port, source="127.0.2.5", banner=False) as c:
        r = c.reply(timeout=scaled(5))
        assert_reply(r, 421, "4.7.0")
        assert "from 127.0.2.0/24" in r.text, r
    with RawClient(gw.port, source="127.0.1.5") as c:
        assert_reply(c.banner, 220)


def test_exempt_clients(gateway):
    gw = gateway({"ratelimit": {"connections_per_ip": "1", "exempt_clients": "127.0.0.2"}})
    for _ in range(3):
        with RawClient(gw.port, source="127.0.0.2") as c:
            assert_reply(c.banner, 220)


def test_message_rate_per_ip(gateway):
    """The third MAIL in the window gets 451 4.7.1 (not counted as an error:
    the session goes on, QUIT works)."""
    gw = rl(gateway, messages_per_ip=2)
    with RawClient(gw.port, source="127.0.0.2") as c:
        c.ehlo()
        for _ in range(2):
            msg, _m = make_message()
            c.transaction(SENDER, [RCPT], msg)
        r = c.cmd(f"MAIL FROM:<{SENDER}>")
        assert_reply(r, 451, "4.7.1")
        assert "Too many messages from [127.0.0.2], try again in" in r.text, r
        assert_reply(c.cmd("QUIT"), 221)
    # a new connection does not reset the count
    with RawClient(gw.port, source="127.0.0.2") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 451, "4.7.1")


def test_message_rate_per_sender_across_clients(gateway):
    """One envelope sender SPF passes for shares one budget from every
    client; a message is counted when it is accepted (250 after DATA), once
    however many recipients it has, and the limit is checked at the first
    RCPT of the next one (only then is SPF known)."""
    gw = rl(gateway, messages_per_sender=2, auth_spf=True)
    gw.dns.add("flood.example", "TXT", '"v=spf1 ip4:127.0.0.0/16 -all"')
    for src in ("127.0.0.2", "127.0.1.3"):
        with RawClient(gw.port, source=src) as c:
            c.ehlo()
            msg, _m = make_message()
            c.transaction("Spam@Flood.example", ["a@example.test", "b@example.test"], msg)
    with RawClient(gw.port, source="127.0.2.4") as c:
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<Spam@Flood.example>"), 250)
        r = c.cmd("RCPT TO:<a@example.test>")
        assert_reply(r, 451, "4.7.1")
        assert "Too many messages from <Spam@Flood.example>, try" in r.text, r
        assert_reply(c.cmd("RSET"), 250)
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<a@example.test>"), 250)
    gw.wait_log(r"limit=messages_per_sender subject=<Spam@Flood\.example> count=3 max=2")


def test_null_sender_counted_per_network(gateway):
    """<> is nobody's address: a flood of bounces from one network uses up
    that network's allowance, not every network's (which would hold up the
    bounces our users are owed)."""
    gw = rl(gateway, messages_per_sender=2)
    for _ in range(2):
        with RawClient(gw.port, source="127.0.0.2") as c:
            c.ehlo()
            msg, _m = make_message()
            c.transaction("", ["a@example.test"], msg)
    with RawClient(gw.port, source="127.0.0.3") as c:   # same /24
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<>"), 250)
        r = c.cmd("RCPT TO:<a@example.test>")
        assert_reply(r, 451, "4.7.1")
        assert "<>:127.0.0.0/24" in r.text, r
    with RawClient(gw.port, source="127.0.1.3") as c:   # another network
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<>"), 250)
        assert_reply(c.cmd("RCPT TO:<a@example.test>"), 250)


def test_forged_sender_cannot_use_up_the_real_senders_budget(gateway):
    """The sender is a shared subject only when SPF passes for it: twenty
    RCPTs with a forged <ceo@partner.test> from an address SPF fails count
    for that sender on that network only (<ceo@partner.test>:127.0.0.0/24),
    and the real sender, from the addresses SPF authorises, keeps its
    budget - which it shares across its own networks (red team finding)."""
    gw = rl(gateway, recipients_per_sender=10, messages_per_sender=3, auth_spf=True)
    gw.dns.add("partner.test", "TXT", '"v=spf1 ip4:127.0.0.2 ip4:127.0.1.2 -all"')
    codes = []
    for _ in range(2):                       # the forger, 127.0.0.1 (SPF fail)
        with RawClient(gw.port, source="127.0.0.1") as c:
            c.ehlo()
            assert_reply(c.cmd("MAIL FROM:<ceo@partner.test>"), 250)
            codes += [c.cmd(f"RCPT TO:<u{i}@example.test>").code for i in range(10)]
    assert codes.count(250) == 10 and codes.count(451) == 10, codes
    gw.wait_log(r"limit=recipients_per_sender subject=<ceo@partner\.test>:127\.0\.0\.0/24 "
                r"count=11 max=10")
    with RawClient(gw.port, source="127.0.0.2") as c:   # the real one (SPF pass)
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<ceo@partner.test>"), 250)
        for i in range(9):
            assert_reply(c.cmd(f"RCPT TO:<boss{i}@example.test>"), 250)
    with RawClient(gw.port, source="127.0.1.2") as c:   # its other network, same budget
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<ceo@partner.test>"), 250)
        assert_reply(c.cmd("RCPT TO:<boss9@example.test>"), 250)
        r = c.cmd("RCPT TO:<boss10@example.test>")
        assert_reply(r, 451, "4.7.1")
        assert "Too many recipients from <ceo@partner.test>, try" in r.text, r


def test_other_tenant_cannot_drain_spf_pass_senders_budget(gateway):
    """victim.test's SPF authorises a shared platform (127.0.0.0/16): every
    tenant of it passes SPF as <ceo@victim.test>.  Another tenant's MAIL,
    RCPT, RSET - six times, no message sent - must not use up the sender's
    messages_per_sender: only accepted messages count (red team finding,
    RT2).  The real sender's messages do count: after its fifth accepted
    one, its sixth is refused at RCPT."""
    gw = rl(gateway, messages_per_sender=5, auth_spf=True)
    gw.dns.add("victim.test", "TXT", '"v=spf1 ip4:127.0.0.0/16 -all"')
    for i in range(6):                                   # the other tenant: RCPT, RSET
        with RawClient(gw.port, source="127.0.0.5") as c:
            c.ehlo()
            assert_reply(c.cmd("MAIL FROM:<ceo@victim.test>"), 250)
            assert_reply(c.cmd(f"RCPT TO:<u{i}@example.test>"), 250)
            assert_reply(c.cmd("RSET"), 250)
    with RawClient(gw.port, source="127.0.1.9") as c:    # the real CEO's mail
        c.ehlo()
        for _ in range(5):
            msg, marker = make_message()
            c.transaction("ceo@victim.test", ["boss@example.test"], msg)
        gw.wait_for_marker(marker)
        assert_reply(c.cmd("MAIL FROM:<ceo@victim.test>"), 250)
        r = c.cmd("RCPT TO:<boss@example.test>")
        assert_reply(r, 451, "4.7.1")
        assert "Too many messages from <ceo@victim.test>, try" in r.text, r
    gw.wait_log(r"limit=messages_per_sender subject=<ceo@victim\.test> count=6 max=5")


def test_refused_rcpts_do_not_drain_the_domain_budget(gateway):
    """The per-client limits are judged first, and an event they refuse is
    not counted against the shared ones: an abuser far over
    recipients_per_ip (40+ 451s) does not use up messages_per_domain or
    recipients_per_domain, and another client's first message gets through
    (red team finding)."""
    gw = rl(gateway, recipients_per_ip=2, messages_per_domain=20, recipients_per_domain=40)
    refused = 0
    for _ in range(3):                       # the abuser, 127.0.0.1
        with RawClient(gw.port, source="127.0.0.1") as c:
            c.ehlo()
            for i in range(15):
                assert_reply(c.cmd("MAIL FROM:<spam@abuse.test>"), 250)
                refused += c.cmd(f"RCPT TO:<u{i}@example.test>").code == 451
                c.cmd("RSET")
    assert refused == 43, refused
    with RawClient(gw.port, source="127.0.0.2") as c:   # an innocent sender
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<alice@partner.test>"), 250)
        assert_reply(c.cmd("RCPT TO:<boss@example.test>"), 250)
    # the domain's counters saw only the 3 RCPTs let through: never over
    assert "limit=messages_per_domain" not in gw.log_text()
    assert "limit=recipients_per_domain" not in gw.log_text()


def test_message_rate_per_net(gateway):
    gw = rl(gateway, messages_per_net=1)
    with RawClient(gw.port, source="127.0.0.2") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    with RawClient(gw.port, source="127.0.0.3") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 451, "4.7.1")
    with RawClient(gw.port, source="127.0.1.3") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)


def test_recipient_rate_per_ip(gateway):
    gw = rl(gateway, recipients_per_ip=3)
    with RawClient(gw.port, source="127.0.0.2") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        for i in range(3):
            assert_reply(c.cmd(f"RCPT TO:<u{i}@example.test>"), 250)
        r = c.cmd("RCPT TO:<u9@example.test>")
        assert_reply(r, 451, "4.7.1")
        assert "Too many recipients from [127.0.0.2]" in r.text, r
        # the accepted ones still get the message
        assert_reply(c.cmd("DATA"), 354)
        msg, marker = make_message()
        c.send(msg + b".\r\n")
        assert_reply(c.reply(), 250)
    gw.wait_for_marker(marker)


def test_recipient_rate_per_domain(gateway):
    """A recipient domain flooded from many addresses is protected; the other
    domain is not affected."""
    gw = rl(gateway, recipients_per_domain=2)
    for src in ("127.0.0.2", "127.0.0.3"):
        with RawClient(gw.port, source=src) as c:
            c.ehlo()
            assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
            assert_reply(c.cmd("RCPT TO:<a@Example.TEST>"), 250)
    with RawClient(gw.port, source="127.0.0.4") as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        r = c.cmd("RCPT TO:<b@example.test>")
        assert_reply(r, 451, "4.7.1")
        assert "Too many recipients for example.test" in r.text, r
        assert_reply(c.cmd("RCPT TO:<b@other.test>"), 250)


def test_recipient_rates_per_net_and_sender(gateway):
    """recipients_per_net: the addresses of a /24 share one budget;
    recipients_per_sender: one envelope sender SPF passes for shares one
    budget across networks.  Every RCPT past the recipient checks counts
    for the client, refused ones too; a RCPT the client's limits refuse is
    not counted for the sender (judged in that order)."""
    gw = rl(gateway, recipients_per_net=3, recipients_per_sender=2, auth_spf=True)
    gw.dns.add("flood.example", "TXT", '"v=spf1 ip4:127.0.0.0/16 -all"')
    with RawClient(gw.port, source="127.0.0.2") as c:
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<one@flood.example>"), 250)
        assert_reply(c.cmd("RCPT TO:<a@example.test>"), 250)
        assert_reply(c.cmd("RCPT TO:<b@example.test>"), 250)
        r = c.cmd("RCPT TO:<c@example.test>")            # net 3 of 3, sender 3 of 2
        assert_reply(r, 451, "4.7.1")
        assert "Too many recipients from <one@flood.example>" in r.text, r
    with RawClient(gw.port, source="127.0.0.3") as c:     # same /24, another sender
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<two@flood.example>"), 250)
        r = c.cmd("RCPT TO:<a@example.test>")            # net 4 of 3: not counted for two@
        assert_reply(r, 451, "4.7.1")
        assert "Too many recipients from 127.0.0.0/24" in r.text, r
    with RawClient(gw.port, source="127.0.1.3") as c:     # another /24
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<two@flood.example>"), 250)
        assert_reply(c.cmd("RCPT TO:<a@example.test>"), 250)   # sender 1 of 2
        assert_reply(c.cmd("RCPT TO:<b@example.test>"), 250)   # sender 2 of 2
        assert_reply(c.cmd("RCPT TO:<c@example.test>"), 451, "4.7.1")
    with RawClient(gw.port, source="127.0.2.3") as c:     # a third /24
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<ONE@Flood.Example>"), 250)   # letter case ignored
        r = c.cmd("RCPT TO:<a@example.test>")
        assert_reply(r, 451, "4.7.1")
        assert "Too many recipients from <ONE@Flood.Example>" in r.text, r
    gw.wait_log(r"limit=recipients_per_net subject=127\.0\.0\.0/24 count=4 max=3")
    gw.wait_log(r"limit=recipients_per_sender subject=<one@flood\.example> count=3 max=2")
    gw.wait_log(r"limit=recipients_per_sender subject=<two@flood\.example> count=3 max=2")


def test_message_rate_per_domain(gateway):
    """messages_per_domain counts an accepted message once per recipient
    domain: three recipients of example.test in one message use one, a
    transaction reset before DATA none.  The check is at the first RCPT of
    the domain in a transaction: over, that RCPT gets 451 (and the next one
    of the domain is a new attempt); another domain is not affected."""
    gw = rl(gateway, messages_per_domain=2)
    msg, marker = make_message()
    with RawClient(gw.port, source="127.0.0.2") as c:
        c.ehlo()
        c.transaction(SENDER, ["a@example.test", "b@example.test", "c@Example.TEST"], msg)
    gw.wait_for_marker(marker)
    with RawClient(gw.port, source="127.0.1.2") as c:
        c.ehlo()
        for _ in range(3):                                        # no message: not counted
            assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
            assert_reply(c.cmd("RCPT TO:<a@example.test>"), 250)
            assert_reply(c.cmd("RSET"), 250)
        msg, _m = make_message()
        c.transaction(SENDER, ["a@example.test"], msg)            # message 2 of 2
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        r = c.cmd("RCPT TO:<a@example.test>")                     # message 3 of 2
        assert_reply(r, 451, "4.7.1")
        assert "Too many messages for example.test, try again in" in r.text, r
        assert_reply(c.cmd("RCPT TO:<b@example.test>"), 451, "4.7.1")
        assert_reply(c.cmd("RCPT TO:<x@other.test>"), 250)
    gw.wait_log(r"limit=messages_per_domain subject=example\.test count=3 max=2")
    assert "limit=messages_per_domain subject=other.test" not in gw.log_text()


def test_concurrency_per_net(gateway):
    """max_connections_per_net: a third open connection from the /24 gets
    421; once one closes, a new one is served; another /24 is unaffected."""
    gw = gateway({"ratelimit": {"max_connections_per_net": "2"}})
    c1 = RawClient(gw.port, source="127.0.0.2")
    c2 = RawClient(gw.port, source="127.0.0.3")
    try:
        assert_reply(c1.banner, 220)
        assert_reply(c2.banner, 220)
        with RawClient(gw.port, source="127.0.0.4", banner=False) as c3:
            r = c3.reply(timeout=scaled(5))
            assert_reply(r, 421, "4.7.0")
            assert "network" in r.text, r
        with RawClient(gw.port, source="127.0.1.4") as c4:
            assert_reply(c4.banner, 220)
        assert_reply(c1.cmd("QUIT"), 221)
        c1.wait_closed(scaled(5))
        gw.wait_log(r"disconnect client=127\.0\.0\.2")
        with RawClient(gw.port, source="127.0.0.4") as c5:
            assert_reply(c5.banner, 220)
    finally:
        c1.close()
        c2.close()
    gw.wait_log(r"reason=max_connections_per_net")


def test_flood_from_one_address(gateway):
    """A flood of 50 connections from one address: exactly connections_per_ip
    are served, the rest refused, and the daemon keeps serving others."""
    gw = rl(gateway, connections_per_ip=10)
    codes = []
    for _ in range(50):
        with RawClient(gw.port, source="127.0.0.9", banner=False) as c:
            codes.append(c.reply(timeout=scaled(5)).code)
    assert codes.count(220) == 10 and codes.count(421) == 40, codes
    msg, marker = make_message()
    gw.send(SENDER, [RCPT], msg, source="127.0.0.1")
    gw.wait_for_marker(marker)


def test_ipv6_network_is_the_64(gateway):
    gw = gateway({"ratelimit": {"connections_per_net": "1", "window": "1h"}}, ipv6=True)
    with gw.client("::1") as c:
        assert_reply(c.banner, 220)
    with gw.client("::1", banner=False) as c:
        r = c.reply(timeout=scaled(5))
        assert_reply(r, 421, "4.7.0")
        assert "from ::/64" in r.text, r


def test_recipient_counted_once_across_a_verification_wait(gateway):
    """A RCPT that waits for the recipient-verification probe runs again
    when the answer is in; its recipient is counted once, not twice (the
    answer is kept for the line, s->rl_ans): two verified recipients fit in
    recipients_per_ip = 2, the third does not."""
    from downstream import Downstream, relay_extra
    ds = Downstream().start()
    try:
        ds.known_users = {"alice@example.test", "bob@example.test", "carol@example.test"}
        extra = relay_extra([f"127.0.0.1:{ds.port}"], route={"verify_recipients": "yes"})
        extra["verify"] = {"timeout": "5s"}
        extra["ratelimit"] = {"window": "1h", "recipients_per_ip": "2"}
        gw = gateway(extra)
        with RawClient(gw.port, source="127.0.0.2") as c:
            c.ehlo()
            assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
            assert_reply(c.cmd("RCPT TO:<alice@example.test>", timeout=scaled(15)), 250)
            assert_reply(c.cmd("RCPT TO:<bob@example.test>", timeout=scaled(15)), 250)
            r = c.cmd("RCPT TO:<carol@example.test>", timeout=scaled(15))
            assert_reply(r, 451, "4.7.1")
            assert "Too many recipients from [127.0.0.2]" in r.text, r
        assert ds.probes == ["alice@example.test", "bob@example.test"]
    finally:
        ds.stop()
