"""Issue 11 item 13: RCPT TO:<postmaster> without a domain (RFC 5321 4.5.1:
any SMTP server that relays or delivers MUST support the reserved mailbox
"postmaster", case-insensitive) is accepted and relayed to the postmaster of
the primary domain - the first accepted domain, or [domains] primary_domain -
even when that domain has a recipient list that does not name postmaster;
likewise postmaster@ any accepted domain ("MUST be supported" in the same
section).
End to end: the downstream (aiosmtpd) gets RCPT TO:<postmaster@PRIMARY>."""

import pytest

from downstream import Downstream, relay_extra
from mxtest import assert_reply, make_message, queued_id, scaled, wait_for

SENDER = "sender@client.example.net"


@pytest.fixture
def ds():
    d = Downstream().start()
    yield d
    d.stop()


def extra(ds, domains):
    e = relay_extra([f"127.0.0.1:{ds.port}"])
    e["domains"] = domains
    return e


@pytest.mark.parametrize("domains,primary,other", [
    # a recipient list for the primary domain that does not name postmaster
    ({"accepted_domains": "example.test, other.test",
      "accepted_recipients": "alice@example.test, bob@other.test"}, "example.test", "other.test"),
    # a configured primary domain (any case in the file)
    ({"accepted_domains": "example.test, other.test", "primary_domain": "Other.TEST",
      "accepted_recipients": "alice@example.test, dave@other.test"}, "other.test", "example.test"),
])
def test_bare_postmaster_delivered_to_primary_domain(gateway, ds, domains, primary, other):
    gw = gateway(extra(ds, domains))
    data, marker = make_message(to="postmaster", sender=SENDER)
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<PostMaster>"), 250, "2.1.5")
        assert_reply(c.cmd("RCPT TO:<postmaster>"), 250, "2.1.5")   # same mailbox
        # postmaster at any accepted domain, listed or not (4.5.1 too)
        assert_reply(c.cmd(f"RCPT TO:<POSTMASTER@{other}>"), 250, "2.1.5")
        # the recipient list still holds for everyone else
        assert_reply(c.cmd(f"RCPT TO:<carol@{primary}>"), 550, "5.1.1")
        assert_reply(c.cmd("RCPT TO:<postmaster@elsewhere.test>"), 550, "5.7.1")
        assert_reply(c.cmd("DATA"), 354)
        c.send(data + b".\r\n")
        assert queued_id(c.reply())
        c.cmd("QUIT")
    wait_for(lambda: ds.find(marker), scaled(10), what="delivery to the downstream")
    [rec] = ds.find(marker)
    assert rec.rcpt_tos == [f"postmaster@{primary}", f"POSTMASTER@{other}"], rec.rcpt_tos
    assert rec.mail_from == SENDER
    assert f"rcpt=<PostMaster> to=<postmaster@{primary}>" in gw.log_text()


def test_postmaster_variants_still_refused(gateway, ds):
    e = extra(ds, {"accepted_domains": "example.test"})
    e["limits"] = {"max_errors": "50"}
    gw = gateway(e)
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        # only the bare reserved name goes without a domain
        for bad in ("postmaster.", "postmasterx", "abuse", "post master", '"postmaster"',
                    "postmaster@elsewhere.test", "postmaster%elsewhere.test@example.test",
                    "postmaster@example.test.elsewhere.test"):
            r = c.cmd(f"RCPT TO:<{bad}>")
            assert str(r.code)[0] == "5", f"<{bad}> accepted: {r}"
        # a source route is dropped (RFC 5321 C.): what is left is postmaster
        assert_reply(c.cmd("RCPT TO:<@relay.example.net:postmaster>"), 250)
    gw.wait_log(r"rcpt=<postmaster> to=<postmaster@example\.test>")
