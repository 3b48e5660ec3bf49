"""Per-verdict actions (issue 13): mxgate's own verdicts - a DMARC
quarantine, the score, a DNSBL listing - each with its own action
(reject | quarantine | tag | deliver), and one subject tag ([rspamd]
subject_tag) for every verdict kind, rspamd configured or not, put on
once.  No scanner daemons here: the clamd and rspamd cases are in
test_scan_clamav.py / test_scan_rspamd.py, attachments in
test_content_attachments.py."""

import pytest

import mxtest
from mxtest import make_message

QSENDER = "dan@dquar.test"   # DMARC p=quarantine, SPF -all: fails from 127.0.0.1
RCPT = "user@example.test"


def policy_gw(gateway, spam=None, dnsbl=None, listed=False):
    """A gateway judging SPF and DMARC against the test zones; the spam
    threshold out of reach unless the test sets it, so each verdict kind is
    seen alone."""
    extra = {"auth": {"spf": "yes", "dmarc": "yes"},
             "spam": dict({"threshold": "100"}, **(spam or {}))}
    if dnsbl:
        extra["dnsbl"] = dnsbl
    gw = gateway(extra, start=False)
    gw.dns.add("_dmarc.dquar.test", "TXT", '"v=DMARC1; p=quarantine"')
    gw.dns.add("dquar.test", "TXT", '"v=spf1 -all"')
    if listed:   # before the start: the start-up probe must not cache "clean"
        gw.dns.add("1.0.0.127.bl.test", "A", "127.0.0.2")
    gw.start()
    return gw


def send(gw, data, sender):
    with gw.client() as c:
        c.ehlo()
        return c.transaction(sender, [RCPT], data, expect_queued=False)


@pytest.mark.parametrize("spam", [{}, {"quarantine_action": "reject",
                                       "dmarc_quarantine_action": "tag"}],
                         ids=["default", "per-kind"])
def test_dmarc_quarantine_tag_puts_the_subject_tag_on(gateway, spam):
    """tag, mxgate's own verdict and no rspamd: "[SPAM]" goes on the Subject
    (it used to add headers only); the per-kind directive overrides
    quarantine_action."""
    gw = policy_gw(gateway, spam)
    data, marker = make_message("dmarc", sender=QSENDER)
    mxtest.assert_reply(send(gw, data, QSENDER), 250)
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "Subject") == [f"[SPAM] dmarc {marker}"]
    assert mxtest.header_values(msg, "X-Spam-Flag") == ["YES"]
    assert "dis=quarantine" in mxtest.header_values(msg, "Authentication-Results")[0]
    gw.wait_log(r"policy_verdict kinds=dmarc action=tag")


def test_dmarc_quarantine_deliver(gateway):
    """deliver: stamped (A-R says dis=quarantine), not flagged, not tagged,
    whatever quarantine_action says for the rest."""
    gw = policy_gw(gateway, {"quarantine_action": "reject", "dmarc_quarantine_action": "deliver"})
    data, marker = make_message("deliver", sender=QSENDER)
    mxtest.assert_reply(send(gw, data, QSENDER), 250)
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "Subject") == [f"deliver {marker}"]
    assert mxtest.header_values(msg, "X-Spam-Flag") == ["NO"]
    assert "dis=quarantine" in mxtest.header_values(msg, "Authentication-Results")[0]
    gw.wait_log(r"policy_verdict kinds=dmarc action=deliver")


@pytest.mark.parametrize("action", ["reject", "tag"])
def test_dnsbl_listing_action(gateway, action):
    """[dnsbl] tag_action: a client listed at tag_threshold (under
    reject_threshold, so it was let in; score 4, under the threshold) is a
    verdict of its own at the end of DATA rather than a share of the score:
    550, or tagged."""
    gw = policy_gw(gateway, spam={"threshold": "5"},
                   dnsbl={"sites": "bl.test", "tag_action": action}, listed=True)
    data, marker = make_message("listed")
    r = send(gw, data, "sender@client.example.net")
    gw.wait_log(r"policy_verdict kinds=dnsbl action=" + action)
    if action == "reject":
        mxtest.assert_reply(r, 550, "5.7.1")
        gw.wait_log(r"reject reason=policy_quarantine")
        assert not gw.find_in_mailbox(marker)
        return
    mxtest.assert_reply(r, 250)
    msg = gw.wait_for_marker(marker)
    assert mxtest.header_values(msg, "Subject") == [f"[SPAM] listed {marker}"]
    assert mxtest.header_values(msg, "X-Spam-Flag") == ["YES"]
    assert "DNSBL_bl.test" in mxtest.header_values(msg, "X-Spam-Status")[0]


def test_tags_of_several_verdicts_go_on_once(gateway):
    """A DMARC quarantine and a DNSBL listing, both tag, on a subject that
    already starts with the tag: one "[SPAM]", not three."""
    gw = policy_gw(gateway, dnsbl={"sites": "bl.test", "tag_action": "tag"}, listed=True)
    fresh, m1 = make_message("twice", sender=QSENDER)
    mxtest.assert_reply(send(gw, fresh, QSENDER), 250)
    again, m2 = make_message("[SPAM] again", sender=QSENDER)
    mxtest.assert_reply(send(gw, again, QSENDER), 250)
    assert mxtest.header_values(gw.wait_for_marker(m1), "Subject") == [f"[SPAM] twice {m1}"]
    assert mxtest.header_values(gw.wait_for_marker(m2), "Subject") == [f"[SPAM] again {m2}"]
    gw.wait_log(r"policy_verdict kinds=dmarc,dnsbl action=tag")
