"""Red team (issue 11): recipient verification as a denial of service.

[verify] max_probes bounds the callouts running at once; when all slots
are taken a RCPT to an uncached address gets 451 at once.  Nothing stops a
single client from taking every slot: each of its sessions sends RCPT to a
random unknown address, and the probes last as long as the downstream
takes to say "no" - Exchange/M365 tarpits 5.1.1 answers (5 s by default),
so a few RCPTs a second from one address hold all 20 default slots and
every other sender's new recipients get 451 for as long as it goes on.

A client address may now start a quarter of max_probes (at least one).
Here the downstream holds the probes (rcpt_gate) to make the overlap
certain; the attacker connects from 127.0.0.1, the honest client from
127.0.0.2."""

import threading

import mxtest
from downstream import Downstream, relay_extra
from mxtest import scaled, wait_for

SENDER = "sender@client.example.net"


def test_one_client_cannot_take_every_probe_slot(gateway):
    """max_probes = 4: one client address may start one probe (a quarter);
    its other RCPTs get 451 at once, and an honest client still gets its
    recipient verified while the attacker's probe hangs."""
    ds = Downstream().start()
    try:
        ds.known_users = {"alice@example.test"}
        ds.rcpt_gate = threading.Event()
        extra = relay_extra([f"127.0.0.1:{ds.port}"], route={"verify_recipients": "yes"})
        extra["verify"] = {"timeout": "20s", "max_probes": "4"}
        gw = gateway(extra)
        attackers = []
        for i in range(4):
            c = gw.client(source="127.0.0.1")
            c.ehlo()
            mxtest.assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
            c.send(f"RCPT TO:<random{i}@example.test>\r\n".encode())
            attackers.append(c)
            if i == 0:
                wait_for(lambda: len(ds.probes) >= 1, scaled(10), what="the first probe")
        for c in attackers[1:]:
            mxtest.assert_reply(c.reply(timeout=scaled(5)), 451, "4.4.3")
        assert ds.probes == ["random0@example.test"], ds.probes
        assert "reason=client_share client=127.0.0.1" in gw.log_text()
        with gw.client(source="127.0.0.2") as h:
            h.ehlo()
            mxtest.assert_reply(h.cmd(f"MAIL FROM:<{SENDER}>"), 250)
            h.send(b"RCPT TO:<alice@example.test>\r\n")
            # the honest recipient is asked about (not 451 at once)
            try:
                wait_for(lambda: "alice@example.test" in ds.probes, scaled(5),
                         what="a probe for the honest client's recipient")
            finally:
                ds.rcpt_gate.set()
            mxtest.assert_reply(h.reply(timeout=scaled(10)), 250)
        mxtest.assert_reply(attackers[0].reply(timeout=scaled(10)), 550, "5.1.1")
        for c in attackers:
            c.close()
    finally:
        ds.rcpt_gate.set()
        ds.stop()
