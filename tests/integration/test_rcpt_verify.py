"""Recipient verification (issue 11, "no more backscatter"): unknown
recipients are refused at RCPT time, so nothing is accepted that the
downstream would refuse and mxgate would then bounce to a forged sender.

- per-domain recipient lists: a list closes only its own domain;
- the SMTP callout (`[route] verify_recipients = yes`): a RCPT probe to the
  route's hosts (EHLO, STARTTLS per the route, MAIL FROM:<>, RCPT TO, QUIT),
  answers cached (positive for days, negative for hours) in a file that
  survives a restart, concurrent probes for one address coalesced, and
  451 4.4.3 by default when the downstream cannot be asked.

Real mxgate, a real SMTP downstream (downstream.py, aiosmtpd) that knows a
set of users and counts the probes it answers.
"""

import threading

import pytest

import mxtest
from downstream import Downstream, relay_extra
from mxtest import make_message, scaled, wait_for

SENDER = "sender@client.example.net"


# ------------------------------------------------------------ per-domain lists

def test_list_closes_only_its_own_domain(gateway, workdir):
    rfile = workdir / "recipients"
    rfile.write_text("# from the directory\nalice@listed.test\n")
    gw = gateway({"domains": {"accepted_domains": "listed.test, open.test",
                              "recipients_file": str(rfile)}})
    with gw.client() as c:
        c.ehlo()
        mxtest.assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        mxtest.assert_reply(c.cmd("RCPT TO:<nobody@listed.test>"), 550, "5.1.1")
        mxtest.assert_reply(c.cmd("RCPT TO:<Alice@Listed.test>"), 250)
        # the other domain has no list: any local part, as before
        mxtest.assert_reply(c.cmd("RCPT TO:<anyone@open.test>"), 250)
        mxtest.assert_reply(c.cmd("RCPT TO:<x@elsewhere.test>"), 550, "5.7.1")
    assert "rcpt=<nobody@listed.test> reason=unknown_user" in gw.log_text()


# ------------------------------------------------------------ callout

@pytest.fixture
def ds():
    d = Downstream().start()
    d.known_users = {"alice@example.test", "bob@example.test"}
    yield d
    d.stop()


def verify_gateway(gateway, ds, hosts=None, verify=None, **route):
    r = {"verify_recipients": "yes"}
    r.update(route)
    extra = relay_extra(hosts or [f"127.0.0.1:{ds.port}"], route=r)
    extra["verify"] = {"timeout": "5s"}
    extra["verify"].update(verify or {})
    return gateway(extra)


def reload(gw):
    n = gw.log_text().count("- reloaded config")
    p = gw.cli("reload")
    assert p.returncode == 0, p.stdout + p.stderr
    wait_for(lambda: gw.log_text().count("- reloaded config") > n, scaled(5), what="reload")


def rcpt(gw, addr, *, client=None):
    def one(c):
        c.ehlo()
        mxtest.assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        return c.cmd(f"RCPT TO:<{addr}>", timeout=scaled(15))
    if client is not None:
        return one(client)
    with gw.client() as c:
        return one(c)


def test_callout_refuses_unknown_accepts_known(gateway, ds):
    gw = verify_gateway(gateway, ds)
    mxtest.assert_reply(rcpt(gw, "mallory@example.test"), 550, "5.1.1")
    mxtest.assert_reply(rcpt(gw, "alice@example.test"), 250)
    assert ds.probes == ["mallory@example.test", "alice@example.test"]
    log = gw.log_text()
    assert "verify rcpt=<mallory@example.test> result=unknown" in log
    assert "reason=unverified" in log
    # a whole message to a known user still goes through and is delivered
    data, marker = make_message(sender=SENDER, to="alice@example.test")
    gw.send(SENDER, ["alice@example.test"], data)
    wait_for(lambda: ds.find(marker), scaled(10), what="delivery")
    # cache hit: no second probe for alice
    assert ds.probes.count("alice@example.test") == 1


def test_cache_hits_without_second_probe(gateway, ds):
    gw = verify_gateway(gateway, ds)
    for _ in range(3):
        mxtest.assert_reply(rcpt(gw, "nobody@example.test"), 550, "5.1.1")
        mxtest.assert_reply(rcpt(gw, "bob@example.test"), 250)
    assert ds.probes.count("nobody@example.test") == 1, ds.probes
    assert ds.probes.count("bob@example.test") == 1, ds.probes


def test_cache_survives_restart(gateway, ds):
    gw = verify_gateway(gateway, ds)
    mxtest.assert_reply(rcpt(gw, "bob@example.test"), 250)
    mxtest.assert_reply(rcpt(gw, "ghost@example.test"), 550, "5.1.1")
    assert len(ds.probes) == 2
    # written off the loop: wait until the file holds both answers
    cache = gw.queue_dir / "verify.cache"
    wait_for(lambda: cache.exists() and "ghost@example.test" in cache.read_text()
             and "bob@example.test" in cache.read_text(), scaled(5), what="cache file")
    gw.restart()
    mxtest.assert_reply(rcpt(gw, "bob@example.test"), 250)
    mxtest.assert_reply(rcpt(gw, "ghost@example.test"), 550, "5.1.1")
    assert len(ds.probes) == 2, ds.probes     # both answered from the file
    # and a real miss still probes
    mxtest.assert_reply(rcpt(gw, "alice@example.test"), 250)
    assert len(ds.probes) == 3


def test_expired_answers_are_asked_again(gateway, ds, workdir):
    gw = verify_gateway(gateway, ds, verify={"cache_file": str(workdir / "vc")})
    (workdir / "vc").write_text("")
    gw.stop()
    # an answer that expired long ago, and a garbage line: both ignored
    (workdir / "vc").write_text("mxgate-verify 1\nP 1000 alice@example.test\nnot a line\n")
    gw.start()
    mxtest.assert_reply(rcpt(gw, "alice@example.test"), 250)
    assert ds.probes == ["alice@example.test"]


def test_downstream_down_defers_by_default(gateway, ds):
    down = mxtest.closed_port()
    gw = verify_gateway(gateway, ds, hosts=[f"127.0.0.1:{down}"])
    r = rcpt(gw, "alice@example.test")
    mxtest.assert_reply(r, 451, "4.4.3")
    assert "verify rcpt=<alice@example.test> result=unavailable" in gw.log_text()
    # never cached: once the downstream is back, the next RCPT asks it
    gw.set_extra(relay_extra([f"127.0.0.1:{ds.port}"],
                             route={"verify_recipients": "yes"}))
    reload(gw)
    mxtest.assert_reply(rcpt(gw, "alice@example.test"), 250)
    assert ds.probes == ["alice@example.test"]


def test_downstream_tempfail_defers_and_accept_is_configurable(gateway, ds):
    ds.rcpt_replies["carol@example.test"] = ["451 4.3.0 try later"] * 10
    gw = verify_gateway(gateway, ds)
    mxtest.assert_reply(rcpt(gw, "carol@example.test"), 451, "4.4.3")
    gw2 = verify_gateway(gateway, ds, verify={"unavailable": "accept"})
    mxtest.assert_reply(rcpt(gw2, "carol@example.test"), 250)
    assert "verify rcpt=<carol@example.test> result=unavailable" in gw2.log_text()
    assert "action=accept_unverified" in gw2.log_text()


def test_concurrent_probes_coalesced(gateway, ds):
    ds.rcpt_gate = threading.Event()     # the probe's RCPT is held until all wait
    gw = verify_gateway(gateway, ds)
    replies = []

    def worker():
        replies.append(rcpt(gw, "bob@example.test").code)
    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    wait_for(lambda: gw.log_text().count('in="RCPT TO:<bob@example.test>"') == 4,
             scaled(10), what="four sessions waiting for bob")
    ds.rcpt_gate.set()
    for t in ts:
        t.join(scaled(20))
    assert replies == [250] * 4
    assert ds.probes == ["bob@example.test"], ds.probes
    assert "verify rcpt=<bob@example.test> result=ok" in gw.log_text()
    assert "waiters=4" in gw.log_text()


def test_probe_count_is_capped(gateway, ds):
    ds.rcpt_gate = threading.Event()     # the first probe runs until released
    gw = verify_gateway(gateway, ds, verify={"max_probes": "1"})
    first = gw.client()
    first.ehlo()
    mxtest.assert_reply(first.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    first.send(b"RCPT TO:<alice@example.test>\r\n")
    wait_for(lambda: ds.probes, scaled(5), what="the first probe")
    # a second address while one probe runs: over the cap, 451 at once
    mxtest.assert_reply(rcpt(gw, "bob@example.test"), 451, "4.4.3")
    ds.rcpt_gate.set()
    mxtest.assert_reply(first.reply(timeout=scaled(10)), 250)
    first.close()
    assert "bob@example.test" not in ds.probes


def test_probe_over_starttls(gateway, test_ca):
    d = Downstream(tls=test_ca).start()
    try:
        d.known_users = {"alice@example.test"}
        gw = verify_gateway(gateway, d, tls="verify", tls_ca_file=test_ca.ca_cert,
                            hosts=None)
        mxtest.assert_reply(rcpt(gw, "alice@example.test"), 250)
        mxtest.assert_reply(rcpt(gw, "eve@example.test"), 550, "5.1.1")
        assert d.probes == ["alice@example.test", "eve@example.test"]
        assert d.probe_tls == [True, True]
    finally:
        d.stop()


def test_listed_domain_is_not_probed(gateway, ds, workdir):
    gw = verify_gateway(gateway, ds)
    gw.set_extra({**relay_extra([f"127.0.0.1:{ds.port}"],
                                route={"verify_recipients": "yes"}),
                  "domains": {"accepted_domains": "example.test",
                              "accepted_recipients": "alice@example.test"}})
    reload(gw)
    mxtest.assert_reply(rcpt(gw, "alice@example.test"), 250)
    mxtest.assert_reply(rcpt(gw, "bob@example.test"), 550, "5.1.1")
    assert ds.probes == []


def test_stop_while_probing(gateway, ds):
    """SIGTERM while a RCPT waits for a probe: the daemon ends cleanly
    (no crash, no leak under the sanitizer build) and exits 0."""
    ds.rcpt_gate = threading.Event()     # never opened: the probe is in flight
    gw = verify_gateway(gateway, ds)
    c = gw.client()
    c.ehlo()
    mxtest.assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    c.send(b"RCPT TO:<alice@example.test>\r\n")
    wait_for(lambda: ds.probes, scaled(5), what="the probe")
    rc = gw.stop()
    assert rc in (0, None), gw.log_tail(30)
    c.close()


def test_pipelined_rcpts_wait_in_order(gateway, ds):
    """RFC 2920: RCPTs pipelined with DATA are answered in order, each after
    its own probe; the message goes to the verified recipient only."""
    gw = verify_gateway(gateway, ds)
    data, marker = make_message(sender=SENDER, to="bob@example.test")
    with gw.client() as c:
        c.ehlo()
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<nobody@example.test>\r\n"
               f"RCPT TO:<bob@example.test>\r\nRCPT TO:<Nobody@Example.test>\r\n"
               f"DATA\r\n".encode())
        replies = [c.reply(timeout=scaled(15)) for _ in range(5)]
        assert [r.code for r in replies] == [250, 550, 250, 550, 354], [str(r) for r in replies]
        c.send(mxtest.dot_stuff(data) + b".\r\n")
        mxtest.queued_id(c.reply(timeout=scaled(15)))
    [rec] = ds.wait_messages(1)
    assert rec.rcpt_tos == ["bob@example.test"]
    assert marker.encode() in rec.data
    # one probe per address (the second "Nobody" came from the cache)
    assert sorted(ds.probes) == ["bob@example.test", "nobody@example.test"]
