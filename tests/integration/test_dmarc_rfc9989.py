"""DMARC by RFC 9989, black-box: the DMARC test table (tree walk with psd,
np, t, two records, IDN, public suffixes) and the regression tests of
issue #12's DMARC items 1-6, each a real SMTP transaction to the real
mxgate binary with a real DNS server (unbound, dnsserver.py) on loopback.

Names under .bd, .jp and .uk are served by the test DNS server like any
other zone: they stand for the Public Suffix List cases (*.bd and
*.kawasaki.jp are PSL wildcard rules, co.uk a plain one) that the old PSL
code got wrong.  Each row sends one message and checks the reply code and
the dmarc= clause of the delivered Authentication-Results.
"""

import re
import uuid

import pytest

import dnsserver
import mxtest

RCPT = "user@example.test"

# zone data: name -> TXT (a list: several records at one name)
ZONE = {
    # item 1: *.bd - two registrants, two organisations
    "_dmarc.victim.com.bd": "v=DMARC1; p=reject",
    # item 1: *.kawasaki.jp - the policy is at acme.shop.kawasaki.jp
    "_dmarc.acme.shop.kawasaki.jp": "v=DMARC1; p=reject",
    # item 2: a public suffix never aligns with its registrants
    "_dmarc.x.co.uk": "v=DMARC1; p=reject",
    # item 3: IDN, published under its A-label (bücher.test)
    "_dmarc.xn--bcher-kva.test": "v=DMARC1; p=reject",
    "xn--bcher-kva.test": "v=spf1 ip4:127.0.0.0/8 -all",
    # IDN MAIL FROM (RFC 8616 4): SPF published under the A-labels
    "mx.xn--bcher-kva.test": "v=spf1 ip4:127.0.0.0/8 -all",
    "xn--mller-kva.test": "v=spf1 ip4:192.0.2.0/24 -all",           # müller.test
    "_dmarc.xn--mller-kva.test": "v=DMARC1; p=none",
    "xn--strae-oqa.test": "v=spf1 ip4:192.0.2.0/24 -all",           # straße.test
    "_dmarc.xn--strae-oqa.test": "v=DMARC1; p=reject",
    # item 4: two records at the From domain, p=reject at its parent
    "_dmarc.sub.tworec.test": ["v=DMARC1; p=none", "v=DMARC1; p=quarantine"],
    "_dmarc.tworec.test": "v=DMARC1; p=reject",
    # item 5: record grammar
    "_dmarc.ws.test": "v = DMARC1 ; p = reject",
    "_dmarc.pctabc.test": "v=DMARC1; p=reject; pct=abc",
    "_dmarc.pct0.test": "v=DMARC1; p=reject; pct=0",
    "_dmarc.notfirst.test": "p=reject; v=DMARC1",
    "_dmarc.nop.test": "v=DMARC1; sp=reject",
    "_dmarc.norua.test": "v=DMARC1; p=bogus; rua=mailto:d@norua.test",
    # item 6: the From a reader shows
    "_dmarc.bank.test": "v=DMARC1; p=reject",
    "evil.test": "v=spf1 ip4:127.0.0.0/8 -all",
    # psd=y: a public suffix operator's record
    "_dmarc.pstest": "v=DMARC1; p=reject; psd=y",
    "mail.brand.pstest": "v=spf1 ip4:127.0.0.0/8 -all",
    "other.pstest": "v=spf1 ip4:127.0.0.0/8 -all",
    # psd=n: an organisation boundary below a record with fewer labels
    "_dmarc.dept.bigcorp.test": "v=DMARC1; p=reject; psd=n",
    "_dmarc.bigcorp.test": "v=DMARC1; p=none",
    "b.bigcorp.test": "v=spf1 ip4:127.0.0.0/8 -all",
    "_dmarc.flat.test": "v=DMARC1; p=reject",
    "b.flat.test": "v=spf1 ip4:127.0.0.0/8 -all",
    # np: non-existent subdomains
    "_dmarc.npdom.test": "v=DMARC1; p=none; sp=none; np=reject",
    # t=y: testing
    "_dmarc.testing.test": "v=DMARC1; p=reject; t=y",
    # more than 8 labels: the walk jumps to the last 7
    "_dmarc.b.c.d.e.f.g.h.i.deep.test": "v=DMARC1; p=none",
    "_dmarc.e.f.g.h.i.deep.test": "v=DMARC1; p=reject",
    # SPF for the attackers and the senders below
    "evil.com.bd": "v=spf1 ip4:127.0.0.0/8 -all",
    "co.uk": "v=spf1 ip4:127.0.0.0/8 -all",
    "none.test": "v=spf1 -all",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("dmarc9989")
    dns = dnsserver.UnboundServer(d)
    for name, txt in ZONE.items():
        for t in txt if isinstance(txt, list) else [txt]:
            dns.add(name, "TXT", t)
    dns.add("real.npdom.test", "A", "192.0.2.1")
    dns.add("pstest", "A", "192.0.2.1")        # the whole TLD is local data
    dns.add("_dmarc.slowwalk.test", "TXT", "v=DMARC1; p=reject")
    dns.blackhole("x.slowwalk.test")           # the walk's first step never answers
    key, key_txt = dnsserver.make_dkim_key(d, 1024, "k")
    for dom in ("evil.com.bd", "co.uk", "evil.test"):
        dns.add_txt(f"sel._domainkey.{dom}", key_txt)
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


def message(from_value, dkim_domain=None, key=None):
    marker = "m" + uuid.uuid4().hex[:16]
    hdr = [f"From: {from_value}", f"To: <{RCPT}>", f"Subject: dmarc {marker}",
           f"Message-ID: <{marker}@client.example.net>"]
    msg = ("\r\n".join(hdr) + "\r\n\r\nhello\r\n").encode("utf-8")
    if dkim_domain is not None:
        msg = dnsserver.dkim_sign(msg, "sel", dkim_domain, key) + msg
    return msg, marker


def deliver(env, from_value, mail_from, dkim_domain=None, helo="client.example.net"):
    """(reply, the delivered message or None) of one transaction."""
    msg, marker = message(from_value, dkim_domain, env.key)
    params = "SMTPUTF8" if any(ord(c) > 127 for c in from_value + mail_from) else ""
    with env.gw.client() as c:
        c.ehlo(helo)
        r = c.transaction(mail_from, [RCPT], msg, mail_params=params, expect_queued=False)
    if r.code != 250:
        return r, None
    found = []

    def look():
        for m in env.gw.mailbox_messages():
            if marker.encode() in m:
                found.append(m)
                return True
        return False
    mxtest.wait_for(look, mxtest.scaled(10), what=f"delivery of {marker}")
    return r, found[0]


def our_ar(m):
    """Our Authentication-Results value of delivered message m."""
    vals = [v for v in mxtest.header_values(m, "Authentication-Results")
            if v.split(";")[0].strip().lower() == "mx.example.test"]
    assert len(vals) == 1, vals
    return vals[0]


def run(env, from_value, mail_from, dkim_domain=None):
    """(reply, the dmarc= clause of Authentication-Results or None) of one
    transaction."""
    r, m = deliver(env, from_value, mail_from, dkim_domain)
    if m is None:
        return r, None
    dm = [c.strip() for c in our_ar(m).split(";") if c.strip().startswith("dmarc=")]
    return r, dm[0] if dm else None


# (id, From value, MAIL FROM, DKIM d= or None, expected code, texts expected
#  in the reply (550) or the dmarc= clause (250))
CASES = [
    # --- issue #12 item 1: PSL wildcard rules (*.bd, *.kawasaki.jp)
    ("item1-bd-dkim", "<ceo@victim.com.bd>", "a@none.test", "evil.com.bd", 550,
     ["DMARC policy of victim.com.bd"]),
    ("item1-bd-spf", "<ceo@victim.com.bd>", "a@evil.com.bd", None, 550,
     ["DMARC policy of victim.com.bd"]),
    ("item1-kawasaki", "<a@news.acme.shop.kawasaki.jp>", "a@none.test", None, 550,
     ["DMARC policy of news.acme.shop.kawasaki.jp"]),
    # --- item 2: d=co.uk does not align with x.co.uk
    ("item2-public-suffix-dkim", "<a@x.co.uk>", "a@none.test", "co.uk", 550,
     ["DMARC policy of x.co.uk"]),
    ("item2-public-suffix-spf", "<a@x.co.uk>", "a@co.uk", None, 550,
     ["DMARC policy of x.co.uk"]),
    # --- item 3: IDN From domain, looked up and aligned as A-labels
    ("item3-idn-fail", "<a@bücher.test>", "a@none.test", None, 550,
     ["DMARC policy of xn--bcher-kva.test"]),
    ("item3-idn-aligned", "<a@BÜCHER.test>", "a@xn--bcher-kva.test", None, 250,
     ["dmarc=pass", "header.from=xn--bcher-kva.test"]),
    # --- item 4: two records at the From domain: no DMARC processing
    ("item4-two-records", "<a@sub.tworec.test>", "a@none.test", None, 250,
     ["dmarc=none", "several DMARC records at _dmarc.sub.tworec.test"]),
    # --- item 5: record grammar
    ("item5-ws-around-equals", "<a@ws.test>", "a@none.test", None, 550,
     ["DMARC policy of ws.test"]),
    ("item5-pct-abc", "<a@pctabc.test>", "a@none.test", None, 550,
     ["DMARC policy of pctabc.test"]),
    ("pct-ignored", "<a@pct0.test>", "a@none.test", None, 550, ["DMARC policy of pct0.test"]),
    ("v-not-first", "<a@notfirst.test>", "a@none.test", None, 250,
     ["dmarc=none", "no DMARC record"]),
    ("no-p-no-rua", "<a@nop.test>", "a@none.test", None, 250,
     ["dmarc=permerror", "no p= tag"]),
    ("bad-p-with-rua", "<a@norua.test>", "a@none.test", None, 250,
     ["dmarc=fail", "p=none", "dis=none"]),
    # --- item 6: the domain a reader shows, or a refusal
    ("item6-addr-then-angle", "ceo@bank.test <a@evil.test>", "a@evil.test", "evil.test", 550,
     ["not a syntactically valid RFC 5322 mailbox"]),
    ("item6-no-space", "ceo@bank.test<a@evil.test>", "a@evil.test", "evil.test", 550,
     ["not a syntactically valid RFC 5322 mailbox"]),
    ("item6-two-angles", "<a@evil.test> <ceo@bank.test>", "a@evil.test", "evil.test", 550,
     ["not a syntactically valid RFC 5322 mailbox"]),
    ("item6-two-angles-name", "Bank <a@evil.test><ceo@bank.test>", "a@evil.test", "evil.test",
     550, ["not a syntactically valid RFC 5322 mailbox"]),
    ("item6-group", "Bank: a@evil.test;", "a@evil.test", "evil.test", 550,
     ["not a syntactically valid RFC 5322 mailbox"]),
    ("item6-quoted-display-name", '"ceo@bank.test" <a@evil.test>', "a@evil.test", "evil.test",
     250, ["dmarc=none", "header.from=evil.test"]),
    ("from-domain-not-a-hostname", "<a@b/c.test>", "a@none.test", None, 550,
     ["the From: domain is not a valid domain name"]),
    ("from-idn-invalid", "<a@xn--zz.test>", "a@none.test", None, 550,
     ["the From: domain is not a valid domain name"]),
    # --- psd=y: policy from the PSD, Organizational Domain one label below
    ("psd-y-policy", "<a@nopolicy.pstest>", "a@none.test", None, 550,
     ["DMARC policy of nopolicy.pstest"]),
    ("psd-y-aligned-sibling", "<a@x.brand.pstest>", "a@mail.brand.pstest", None, 250,
     ["dmarc=pass", "policy.dmarc=reject polrec.domain=pstest polrec.p=reject"]),
    ("psd-y-other-org", "<a@x.brand.pstest>", "a@other.pstest", None, 550,
     ["DMARC policy of x.brand.pstest"]),
    # --- psd=n: the organisation ends at dept.bigcorp.test
    ("psd-n-boundary", "<a@x.dept.bigcorp.test>", "a@b.bigcorp.test", None, 550,
     ["DMARC policy of x.dept.bigcorp.test"]),
    ("no-psd-fewest-labels", "<a@x.flat.test>", "a@b.flat.test", None, 250, ["dmarc=pass"]),
    # --- np: non-existent subdomain
    ("np-nonexistent", "<a@ghost.npdom.test>", "a@none.test", None, 550,
     ["DMARC policy of ghost.npdom.test"]),
    ("np-existing-uses-sp", "<a@real.npdom.test>", "a@none.test", None, 250,
     ["dmarc=fail", "np=reject", "record=npdom.test", "dis=none",
      "policy.dmarc=none polrec.domain=npdom.test polrec.p=none"]),
    # --- t=y: one step weaker
    ("t-y-testing", "<a@testing.test>", "a@none.test", None, 250,
     ["dmarc=fail", "t=y", "dis=quarantine", "policy.dmarc=reject"]),
    # --- a lookup of the walk fails: temperror (451), never none or 250
    ("walk-dns-timeout", "<a@x.slowwalk.test>", "a@none.test", None, 451,
     ["DMARC check of x.slowwalk.test failed temporarily"]),
    # --- a name of more than 8 labels: the walk jumps to its last 7
    ("walk-jump", "<a@a.b.c.d.e.f.g.h.i.deep.test>", "a@none.test", None, 550,
     ["DMARC policy of a.b.c.d.e.f.g.h.i.deep.test"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_dmarc_rfc9989_table(env, case):
    _, from_value, mail_from, dkim_domain, code, texts = case
    r, dm = run(env, from_value, mail_from, dkim_domain)
    assert r.code == code, (r, dm)
    where = r.text if code != 250 else dm
    assert where is not None, r
    for t in texts:
        assert t in where, (t, where)


# --- IDN MAIL FROM / HELO (RFC 8616 4): SPF looks up the A-labels, DMARC
# aligns them with the A-label From domain, and what our header fields say
# about the envelope is ASCII (the domain as A-labels, a UTF-8 local-part
# left out: RFC 8601 2.2 "@" domain-name).
# (id, HELO, From value, MAIL FROM, expected code, texts in the reply (550)
#  or in Authentication-Results (250), texts in Received-SPF (250))
IDN_CASES = [
    ("idn-mailfrom-aligned", "client.example.net", "<a@bücher.test>", "a@bücher.test", 250,
     ["spf=pass", "smtp.mailfrom=a@xn--bcher-kva.test", "dmarc=pass",
      "header.from=xn--bcher-kva.test"],
     ["pass (", 'envelope-from="a@xn--bcher-kva.test"']),
    ("idn-mailfrom-mapped-ascii-from", "client.example.net", "<a@xn--bcher-kva.test>",
     "a@BÜCHER.test", 250, ["spf=pass", "smtp.mailfrom=a@xn--bcher-kva.test", "dmarc=pass"],
     ['envelope-from="a@xn--bcher-kva.test"']),
    ("idn-utf8-local-part", "client.example.net", "<jörg@bücher.test>", "jörg@bücher.test",
     250, ["spf=pass", "smtp.mailfrom=@xn--bcher-kva.test", "dmarc=pass"],
     ['envelope-from="@xn--bcher-kva.test"']),
    ("idn-mailfrom-not-authorised", "client.example.net", "<a@müller.test>", "a@müller.test",
     250, ["spf=fail", "does not designate 127.0.0.1", "smtp.mailfrom=a@xn--mller-kva.test",
           "dmarc=fail", "header.from=xn--mller-kva.test"],
     ["fail (", 'envelope-from="a@xn--mller-kva.test"']),
    ("idn-mailfrom-not-authorised-reject", "client.example.net", "<a@straße.test>",
     "a@straße.test", 550, ["DMARC policy of xn--strae-oqa.test"], []),
    ("idn-mailfrom-invalid", "client.example.net", "<a@müller.test>", "a@\u2603.test", 250,
     ["spf=none", "is not a valid internationalized domain name",
      'smtp.mailfrom="a@???.test"', "dmarc=fail"],
     ["none (", 'envelope-from="a@???.test"']),
    ("idn-helo-null-sender", "mx.bücher.test", "<a@müller.test>", "", 250,
     ["spf=pass", "postmaster@mx.xn--bcher-kva.test", "smtp.helo=mx.xn--bcher-kva.test"],
     ["pass (", "helo=mx.xn--bcher-kva.test", "identity=helo"]),
]


@pytest.mark.parametrize("case", IDN_CASES, ids=[c[0] for c in IDN_CASES])
def test_idn_envelope(env, case):
    _, helo, from_value, mail_from, code, texts, rspf_texts = case
    r, m = deliver(env, from_value, mail_from, helo=helo)
    assert r.code == code, r
    if code != 250:
        for t in texts:
            assert t in r.text, (t, r.text)
        # the refused message's SPF verdict (decision line): fail, by the
        # A-label domain's record
        env.gw.wait_log(r" from=<%s> .* spf=fail .*dmarc=fail " % re.escape(mail_from))
        return
    ar = our_ar(m)
    for t in texts:
        assert t in ar, (t, ar)
    rspf = mxtest.header_values(m, "Received-SPF")
    assert len(rspf) == 1, rspf
    for t in rspf_texts:
        assert t in rspf[0], (t, rspf[0])
    # our fields about the envelope are ASCII, whatever the client sent
    for name in (b"Authentication-Results:", b"Received-SPF:"):
        at = m.index(name)
        end = m.index(b"\r\n", at)
        while m[end + 2:end + 3] in (b" ", b"\t"):
            end = m.index(b"\r\n", end + 2)
        assert max(m[at:end]) < 0x80, m[at:end]
