"""Connection-level defence, part 5 (issue 17): greylisting (optional, off by
default) at the end of DATA: a new (client /24, sender, recipient) triplet
gets 451 4.7.1 until retried after `delay`; a correct retry allowlists the
client's network; DNSWL-listed clients, SPF passes for skip_spf_domains and
DKIM-signed mail passing DMARC p=reject are never greylisted."""

import re
import sys
import time
from pathlib import Path

from mxtest import RawClient, assert_reply, make_message, queued_id, scaled

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dnsserver  # noqa: E402

SENDER = "sender@client.example.net"
RCPT = "user@example.test"


def attempt(gw, msg, source, sender=SENDER, rcpts=(RCPT,)):
    """One transaction; the reply to the end of DATA."""
    with RawClient(gw.port, source=source) as c:
        c.ehlo()
        return c.transaction(sender, list(rcpts), msg, expect_queued=False)


def test_greylist_then_retry_then_network_allowlisted(gateway):
    gw = gateway({"greylist": {"enabled": "yes", "delay": "4s"}})
    msg, marker = make_message()
    r = attempt(gw, msg, "127.0.2.2")
    assert_reply(r, 451, "4.7.1")
    m = re.search(r"Greylisted, please try again in (\d+) seconds", r.text)
    assert m and 0 < int(m.group(1)) <= 4, r
    assert_reply(attempt(gw, msg, "127.0.2.2"), 451, "4.7.1")     # too early
    assert not gw.mailbox_files()
    time.sleep(4.5)
    queued_id(attempt(gw, msg, "127.0.2.2"))
    gw.wait_for_marker(marker)
    gw.wait_log(r"greylist client=127\.0\.2\.2 from=<sender@client\.example\.net> "
                r"rcpt=<user@example\.test> result=retried")
    # another address of the same /24, another sender: allowlisted
    msg2, marker2 = make_message()
    queued_id(attempt(gw, msg2, "127.0.2.3", sender="other@elsewhere.example"))
    gw.wait_for_marker(marker2)
    gw.wait_log(r"greylist client=127\.0\.2\.3 .*result=allowlisted")
    # a client of another /24 is greylisted
    assert_reply(attempt(gw, msg2, "127.0.3.3"), 451, "4.7.1")


def test_each_recipient_is_a_triplet(gateway):
    gw = gateway({"greylist": {"enabled": "yes", "delay": "1s"}})
    msg, _ = make_message()
    assert_reply(attempt(gw, msg, "127.0.2.2"), 451, "4.7.1")
    time.sleep(1.5)
    # a retry with one more recipient: the new triplet still waits
    assert_reply(attempt(gw, msg, "127.0.2.2", rcpts=(RCPT, "b@example.test")), 451, "4.7.1")


def test_off_by_default(gateway):
    gw = gateway()
    msg, marker = make_message()
    queued_id(attempt(gw, msg, "127.0.2.2"))
    gw.wait_for_marker(marker)


def test_dnswl_client_skips_greylisting(gateway):
    gw = gateway({"greylist": {"enabled": "yes", "delay": "1h"},
                  "dnsbl": {"sites": "wl.test*-5"}}, start=False)
    gw.dns.add("2.2.0.127.wl.test", "A", "127.0.10.2")
    gw.start()
    msg, marker = make_message()
    queued_id(attempt(gw, msg, "127.0.2.2"))
    gw.wait_for_marker(marker)
    gw.wait_log(r"greylist client=127\.0\.2\.2 .*result=skipped reason=dnswl")
    assert_reply(attempt(gw, msg, "127.0.2.3"), 451, "4.7.1")   # not listed


def test_spf_pass_for_listed_domain_skips(gateway):
    gw = gateway({"greylist": {"enabled": "yes", "delay": "1h",
                               "skip_spf_domains": "example.net"},
                  "auth": {"spf": "yes"}}, start=False)
    gw.dns.add("client.example.net", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    gw.dns.add("other.example.org", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    gw.start()
    msg, marker = make_message()
    queued_id(attempt(gw, msg, "127.0.2.2"))
    gw.wait_for_marker(marker)
    gw.wait_log(r"result=skipped reason=spf_pass")
    # SPF passes, but the domain is not listed
    msg2, _ = make_message(sender="x@other.example.org")
    assert_reply(attempt(gw, msg2, "127.0.2.2", sender="x@other.example.org"), 451, "4.7.1")


def test_dkim_signed_dmarc_reject_pass_skips(gateway, workdir):
    gw = gateway({"greylist": {"enabled": "yes", "delay": "1h"},
                  "auth": {"dkim": "yes", "dmarc": "yes"}}, start=False)
    key, txt = dnsserver.make_dkim_key(workdir, 1024, "grey")
    gw.dns.add("sel._domainkey.signed.example", "TXT", f'"{txt}"')
    gw.dns.add("_dmarc.signed.example", "TXT", '"v=DMARC1; p=reject"')
    gw.dns.add("_dmarc.lax.example", "TXT", '"v=DMARC1; p=none"')
    gw.dns.add("sel._domainkey.lax.example", "TXT", f'"{txt}"')
    gw.start()
    msg, marker = make_message(sender="alice@signed.example")
    msg = dnsserver.dkim_sign(msg, "sel", "signed.example", key) + msg
    queued_id(attempt(gw, msg, "127.0.2.2", sender="alice@signed.example"))
    gw.wait_for_marker(marker)
    gw.wait_log(r"result=skipped reason=dkim_dmarc_reject")
    # the same with p=none is greylisted
    msg, _ = make_message(sender="bob@lax.example")
    msg = dnsserver.dkim_sign(msg, "sel", "lax.example", key) + msg
    assert_reply(attempt(gw, msg, "127.0.2.2", sender="bob@lax.example"), 451, "4.7.1")
