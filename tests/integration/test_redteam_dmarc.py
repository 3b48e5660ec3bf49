"""Red team (issue 12, DMARC): records and From: values an attacker would
use to get a p=reject domain's policy ignored.  Each case spoofs a p=reject
domain (SPF fails, no DKIM): the right answer is always 550.

Real unbound on loopback (dnsserver.py), the real binary; the transaction
helper is test_dmarc_rfc9989.py's."""

import uuid

import pytest

import dnsserver
import mxtest
from test_dmarc_rfc9989 import RCPT, run

DEEP = ".".join(f"l{i}" for i in range(40)) + ".bank.test"  # 42 labels

ZONE = {
    "_dmarc.bank.test": "v=DMARC1; p=reject",
    # RFC 9989 4.8: syntax errors in the rest of the record are discarded
    "_dmarc.typo.test": "v=DMARC1; p=reject; fo:1",
    "_dmarc.stray.test": "v=DMARC1; p=reject; rua=mailto:d@stray.test; ruf",
    # one record in two character-strings (RFC 7208-style concatenation)
    "_dmarc.split.test": '"v=DMARC1; p=" "reject"',
    # a record far over 512 octets: the answer needs TCP
    "_dmarc.big.test": "v=DMARC1; p=reject; x=" + "a" * 3000,
    "none.test": "v=spf1 -all",
}

# The query-budget attack: DKIM d= and MAIL FROM domains of 11 labels under
# the victim's TLD, all the attacker's (valid keys, SPF pass): each
# alignment check walks 7 new names; the message's 48-query budget runs out.
BUDGET_DS = [f"a.b.c.d.e.f.g.h.i.ev{i}.test" for i in range(5)]
BUDGET_MAILFROM = "a.b.c.d.e.f.g.h.i.evmf.test"
BUDGET_FROM = "x1.x2.x3.x4.x5.x6.x7.x8.bank.test"

CASES = [
    ("record-colon-typo", "<a@typo.test>", 550, "DMARC policy of typo.test"),
    ("record-stray-word", "<a@stray.test>", 550, "DMARC policy of stray.test"),
    ("record-two-strings", "<a@split.test>", 550, "DMARC policy of split.test"),
    ("record-3k-over-tcp", "<a@big.test>", 550, "DMARC policy of big.test"),
    ("from-42-labels", f"<a@{DEEP}>", 550, f"DMARC policy of {DEEP}"),
    ("from-upper-trailing-dot", "<a@BANK.TEST.>", 550, "DMARC policy of bank.test"),
    ("from-comment-in-domain", "<a@bank(x).test>", 550, None),
    ("from-fullwidth-dot", "<a@bank\uff0etest>", 550, None),
    ("from-ideographic-dot", "<a@bank\u3002test>", 550, None),
    ("from-fullwidth-letters", "<a@\uff42\uff41\uff4e\uff4b.test>", 550, None),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("rtdmarc")
    dns = dnsserver.UnboundServer(d)
    for name, txt in ZONE.items():
        dns.add(name, "TXT", txt)
    key, key_txt = dnsserver.make_dkim_key(d, 1024, "k")
    for dom in BUDGET_DS:
        dns.add_txt(f"sel._domainkey.{dom}", key_txt)
    dns.add(BUDGET_MAILFROM, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.blackhole("slowmf.test")               # the attacker's own slow zone
    dns.start()
    gw = mxtest.Gateway(d / "gw", {"dns": {"forwarders": dns.forwarder, "timeout": "2s"},
                                   "auth": {"spf": "yes", "dkim": "yes", "dmarc": "yes"}},
                        dns=False).start()

    class Env:
        pass
    e = Env()
    e.gw, e.key = gw, key
    yield e
    try:
        rc = gw.stop()
        assert rc in (0, None), gw.log_tail(40)
    finally:
        gw.close()
        dns.close()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_spoof_of_a_reject_domain_is_refused(env, case):
    _, from_value, code, text = case
    r, dm = run(env, from_value, "a@none.test")
    assert r.code == code, (r, dm)
    if text:
        assert text in r.text, r


def test_query_budget_exhaustion_is_not_a_temperror(env):
    """From: a subdomain of bank.test (p=reject), five valid DKIM signatures
    and an SPF pass, all for the attacker's own deep names under .test:
    none is aligned.  Walking their Organizational Domains spends the
    message's DMARC query budget; running out must not turn the verdict
    into temperror (451, or delivery with dmarc_temperror = accept): the
    names the budget could not walk are the message's own doing, not a DNS
    failure, so they count as not aligned and p=reject applies (550)."""
    marker = "m" + uuid.uuid4().hex[:16]
    hdr = [f"From: <ceo@{BUDGET_FROM}>", f"To: <{RCPT}>", f"Subject: budget {marker}",
           f"Message-ID: <{marker}@client.example.net>"]
    msg = ("\r\n".join(hdr) + "\r\n\r\nhello\r\n").encode()
    sigs = b"".join(dnsserver.dkim_sign(msg, "sel", dom, env.key) for dom in BUDGET_DS)
    with env.gw.client() as c:
        c.ehlo("client.example.net")
        r = c.transaction(f"a@{BUDGET_MAILFROM}", [RCPT], sigs + msg, expect_queued=False)
    assert r.code == 550, r
    assert f"DMARC policy of {BUDGET_FROM}" in r.text, r


def test_attackers_slow_dns_does_not_turn_a_fail_into_temperror(env):
    """MAIL FROM on the attacker's own zone whose DNS never answers: SPF is
    temperror for x.slowmf.test, which cannot be aligned with bank.test
    (the Organizational Domain of an identifier is a suffix of it, and
    bank.test is not a suffix of x.slowmf.test).  Its timed-out walk must
    not make the p=reject verdict 'temperror' (451, or delivery with
    dmarc_temperror = accept): 550."""
    r, dm = run(env, "<ceo@bank.test>", "a@x.slowmf.test")
    assert r.code == 550, (r, dm)
    assert "DMARC policy of bank.test" in r.text, r


@pytest.mark.parametrize("selector", ["a" * 70, ".".join(["s" * 60] * 4), "a..b"],
                         ids=["label-over-63", "name-over-253", "empty-label"])
def test_unlookupable_selector_of_the_from_domain_is_not_a_temperror(env, selector):
    """A DKIM signature claiming d=bank.test (aligned) with a selector that
    makes the key name impossible (a label over 63 octets, a name over 253,
    an empty label).  That is the signature's own syntax: permerror, never
    temperror - else anyone turns bank.test's p=reject into 451 (or into
    delivery with dmarc_temperror = accept)."""
    marker = "m" + uuid.uuid4().hex[:16]
    hdr = [f"From: <ceo@bank.test>", f"To: <{RCPT}>", f"Subject: sel {marker}",
           f"Message-ID: <{marker}@client.example.net>"]
    msg = ("\r\n".join(hdr) + "\r\n\r\nhello\r\n").encode()
    sig = dnsserver.dkim_sign(msg, "placeholder", "bank.test", env.key)
    sig = sig.replace(b"s=placeholder", b"s=" + selector.encode())
    with env.gw.client() as c:
        c.ehlo("client.example.net")
        r = c.transaction("a@none.test", [RCPT], sig + msg, expect_queued=False)
    assert r.code == 550, r
    assert "DMARC policy of bank.test" in r.text, r


def test_from_domain_too_long_for_a_dmarc_query_is_not_a_temperror(env):
    """From: a valid 250-octet subdomain of bank.test (p=reject): the name
    _dmarc.<it> is over 253 octets, so no record can be there.  That must
    not stop policy discovery as a DNS failure (temperror, 451 - or
    delivery with dmarc_temperror = accept): the walk goes on to bank.test
    and its p=reject applies."""
    dom = ".".join(["a" * 40] * 5 + ["bank.test"])          # 214 octets
    dom = "b" * (250 - len(dom) - 1) + "." + dom
    assert len(dom) == 250
    r, dm = run(env, f"<ceo@{dom}>", "a@none.test")
    assert r.code == 550, (r, dm)
    assert "DMARC policy of" in r.text, r
