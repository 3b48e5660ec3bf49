"""SPF, DKIM, DMARC, DNSBL and the verdict headers, black-box: real SMTP to the
real mxgate binary, a real DNS server (unbound, dnsserver.py) on loopback,
DKIM keys made and messages signed at test time, delivered .eml files read
back from the directory route.

Three gateways share one DNS server (module scope, to keep the file well
under two minutes): `main` (defaults, dmarc_enforcement = reject), `opts`
(spf_reject_fail, spf_temperror_defer, DMARC exemptions) and `dnssec`
(a trust anchor for the signed test zones).  The slow-DNS test runs its own.
"""

import socket
import threading
import time
from pathlib import Path

import pytest

import dnsserver
import mxtest

RCPT = "user@example.test"


# ------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    dns = dnsserver.UnboundServer(d)
    keys = {}
    keys["good"], good_txt = dnsserver.make_dkim_key(d, 2048, "good")
    keys["other"], _ = dnsserver.make_dkim_key(d, 1024, "other")
    keys["weak"], weak_txt = dnsserver.make_dkim_key(d, 512, "weak")
    keys["ed"], ed_txt = dnsserver.make_ed25519_key()
    # SPF
    dns.add("pass.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add("fail.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add("softfail.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all")
    dns.add("neutral.test", "TXT", "v=spf1 ?all")
    dns.add("none.test", "A", "192.0.2.1")
    dns.add("permerror.test", "TXT", "v=spf1 ip4:127.0.0.1/99 -all")   # syntax
    dns.add("twice.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")         # RFC 7208 4.5
    dns.add("twice.test", "TXT", "v=spf1 -all")
    dns.add("helo.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.blackhole("slow.test")
    # DKIM
    dns.add("dk.test", "TXT", "v=spf1 -all")
    dns.add_txt("good._domainkey.dk.test", good_txt)
    dns.add_txt("wrong._domainkey.dk.test", good_txt)       # signed with "other"
    dns.add_txt("weak._domainkey.dk.test", weak_txt)
    dns.add_txt("ed._domainkey.dk.test", ed_txt)
    dns.add("revoked._domainkey.dk.test", "TXT", "v=DKIM1; k=rsa; p=")
    dns.add("_dmarc.dk.test", "TXT", "v=DMARC1; p=none")
    # DMARC
    dns.add("_dmarc.pass.test", "TXT", "v=DMARC1; p=reject")
    for dom, rec in [("dnone.test", "v=DMARC1; p=none"),
                     ("dquar.test", "v=DMARC1; p=quarantine"),
                     ("drej.test", "v=DMARC1; p=reject"),
                     ("dpct.test", "v=DMARC1; p=reject; pct=0"),
                     ("dtest.test", "v=DMARC1; p=reject; t=y"),
                     ("org.test", "v=DMARC1; p=reject; sp=none"),
                     ("strict.test", "v=DMARC1; p=reject; aspf=s"),
                     ("exempt.test", "v=DMARC1; p=reject")]:
        dns.add("_dmarc." + dom, "TXT", rec)
        dns.add(dom, "TXT", "v=spf1 -all")
    dns.add("sub.strict.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    # DNSBL: only 127.0.0.3 is listed
    dns.add("3.0.0.127.bl.test", "A", "127.0.0.2")
    # DNSSEC: one good zone, one tampered (bogus)
    ta1 = dns.add_signed_zone("signed.test", [("signed.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")])
    ta2 = dns.add_signed_zone("bogus.test", [("bogus.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")],
                              tamper=True)
    ta = d / "anchors"
    ta.write_text(Path(ta1).read_text() + Path(ta2).read_text())
    dns.start()
    gws = {}

    def gateway(name, **auth):
        a = {"spf": "yes", "dkim": "yes", "dmarc": "yes"}
        extra_dns = {"forwarders": auth.pop("forwarder", dns.forwarder), "timeout": "1s"}
        if auth.pop("dnssec", False):
            extra_dns["trust_anchor_file"] = str(ta)
        limits = auth.pop("limits", None)
        workers = auth.pop("workers", None)
        if workers:
            a["policy_workers"] = str(workers)
        a.update(auth)
        extra = {"dns": extra_dns, "auth": a, "spam": {"dnsbl_zones": "bl.test"}}
        if limits:
            extra["limits"] = limits
        gw = mxtest.Gateway(d / name, extra, dns=False)
        gws[name] = gw
        return gw.start()

    class Env:
        pass
    e = Env()
    e.dns, e.keys, e.dir, e.gateway = dns, keys, d, gateway
    e.main = gateway("main")
    e.opts = gateway("opts", spf_reject_fail="yes", spf_temperror_defer="yes",
                     dmarc_exempt_domains="exempt.test", dmarc_exempt_clients="127.0.0.4/32")
    e.dnssec = gateway("dnssec", dnssec=True)
    yield e
    problems = []
    for name, gw in gws.items():
        try:
            if gw.proc is not None:
                rc = gw.stop()
                if rc not in (0, None):
                    problems.append(f"{name}: exit {rc}\n{gw.log_tail(40)}")
        except AssertionError as ex:
            problems.append(f"{name}: {ex}")
        finally:
            gw.close()
    dns.close()
    assert not problems, "\n".join(problems)


def deliver(gw, mail_from, msg, marker, *, helo="client.example.net", source=None):
    """Send msg and return the delivered message (bytes) carrying marker."""
    kw = {"source": source} if source else {}
    gw.send(mail_from, [RCPT], msg, ehlo=helo, **kw)
    found = []

    def look():
        for m in gw.mailbox_messages():
            if marker.encode() in m:
                found.append(m)
                return True
        return False
    mxtest.wait_for(look, mxtest.scaled(10), what=f"delivery of {marker}")
    return found[0]


def refuse(gw, mail_from, msg, *, helo="client.example.net", source=None):
    """Send msg; return the final reply to the data (expected refused)."""
    kw = {"source": source} if source else {}
    with gw.client(**kw) as c:
        c.ehlo(helo)
        return c.transaction(mail_from, [RCPT], msg, expect_queued=False)


def ar(msg):
    """The one Authentication-Results field (unfolded) with our id."""
    vals = [v for v in mxtest.header_values(msg, "Authentication-Results")
            if v.split(";")[0].strip().lower() == "mx.example.test"]
    assert len(vals) == 1, vals
    return vals[0]


def signed(key, selector="good", domain="dk.test", sender="alice@dk.test", canon=b"relaxed",
           algo=b"rsa-sha256", body="hello\r\n", headers=()):
    msg, marker = mxtest.make_message(sender=sender, body=body, headers=headers)
    sig = dnsserver.dkim_sign(msg, selector, domain, key, canon=(canon, canon), algo=algo)
    return sig + msg, marker


# ------------------------------------------------------------ SPF

@pytest.mark.parametrize("dom,result", [
    ("pass.test", "pass"), ("fail.test", "fail"), ("softfail.test", "softfail"),
    ("neutral.test", "neutral"), ("none.test", "none"), ("permerror.test", "permerror"),
    ("twice.test", "permerror"),
    ("slow.test", "temperror")])
def test_spf_results(env, dom, result):
    # From: slow.test would make DMARC temperror, which answers 451 by
    # default (test_hostile_dos.py): the From: of that case answers.
    msg, marker = mxtest.make_message(sender="bob@none.test" if dom == "slow.test" else f"bob@{dom}")
    m = deliver(env.main, f"bob@{dom}", msg, marker)
    a = ar(m)
    assert f"spf={result} (" in a and f"smtp.mailfrom=bob@{dom}" in a, a
    rspf = mxtest.header_values(m, "Received-SPF")
    assert len(rspf) == 1 and rspf[0].startswith(result + " ("), rspf
    assert "client-ip=127.0.0.1;" in rspf[0] and "identity=mailfrom;" in rspf[0]


def test_spf_helo_for_null_sender(env):
    msg, marker = mxtest.make_message(sender="postmaster@helo.test")
    m = deliver(env.main, "", msg, marker, helo="helo.test")
    a = ar(m)
    assert "spf=pass (mx.example.test: domain of postmaster@helo.test designates" in a
    assert "smtp.helo=helo.test" in a
    assert "identity=helo;" in mxtest.header_values(m, "Received-SPF")[0]


def test_spf_reject_fail_and_temperror_defer(env):
    with env.opts.client() as c:
        c.ehlo()
        mxtest.assert_reply(c.cmd("MAIL FROM:<bob@fail.test>"), 250)
        r = c.cmd(f"RCPT TO:<{RCPT}>")
        mxtest.assert_reply(r, 550, "5.7.23")
        mxtest.assert_reply(c.cmd("RSET"), 250)
        mxtest.assert_reply(c.cmd("MAIL FROM:<bob@slow.test>"), 250)
        r = c.cmd(f"RCPT TO:<{RCPT}>")
        mxtest.assert_reply(r, 451, "4.7.24")
        mxtest.assert_reply(c.cmd("RSET"), 250)
        mxtest.assert_reply(c.cmd("MAIL FROM:<bob@softfail.test>"), 250)
        mxtest.assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)


# ------------------------------------------------------------ DKIM

@pytest.mark.parametrize("canon", [b"relaxed", b"simple"])
def test_dkim_pass(env, canon):
    msg, marker = signed(env.keys["good"], canon=canon)
    m = deliver(env.main, "bounce@pass.test", msg, marker)
    a = ar(m)
    assert "dkim=pass (2048-bit key) header.d=dk.test header.s=good" in a, a
    assert "header.b=" in a
    # DKIM alone aligns with From: dk.test (SPF passed for pass.test only)
    assert "dmarc=pass" in a and "header.from=dk.test" in a


def test_dkim_ed25519(env):
    msg, marker = signed(env.keys["ed"], selector="ed", algo=b"ed25519-sha256")
    m = deliver(env.main, "bounce@pass.test", msg, marker)
    assert "dkim=pass (ed25519-sha256) header.d=dk.test header.s=ed" in ar(m)


def test_dkim_body_modified(env):
    msg, marker = signed(env.keys["good"])
    msg = msg.replace(b"hello\r\n", b"hellO\r\n")
    m = deliver(env.main, "bounce@pass.test", msg, marker)
    a = ar(m)
    assert "dkim=fail (body hash did not verify) header.d=dk.test" in a, a


@pytest.mark.parametrize("selector,key,result", [
    ("missing", "good", "dkim=permerror (no key for signature)"),
    ("revoked", "good", "dkim=fail ("),
    ("weak", "weak", "dkim=policy (512-bit key is too short, RFC 8301)"),
    ("good", "good", "dkim=policy (rsa-sha1 is not accepted, RFC 8301)"),
])
def test_dkim_key_problems(env, selector, key, result):
    algo = b"rsa-sha1" if "sha1" in result else b"rsa-sha256"
    msg, marker = signed(env.keys[key], selector=selector, algo=algo)
    m = deliver(env.main, "bounce@pass.test", msg, marker)
    a = ar(m)
    assert result in a and f"header.s={selector}" in a, a
    assert "dmarc=pass" not in a


def test_dkim_two_signatures_one_bad(env):
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    s1 = dnsserver.dkim_sign(msg, "good", "dk.test", env.keys["good"])
    s2 = dnsserver.dkim_sign(msg, "wrong", "dk.test", env.keys["other"])
    m = deliver(env.main, "bounce@pass.test", s2 + s1 + msg, marker)
    a = ar(m)
    assert "dkim=pass (2048-bit key) header.d=dk.test header.s=good" in a, a
    assert "dkim=fail (signature verification failed) header.d=dk.test header.s=wrong" in a, a
    assert "dmarc=pass" in a
    assert "DKIM_FAIL" not in mxtest.header_values(m, "X-Spam-Status")[0]


def test_dkim_max_signatures(env):
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    sigs = b"".join(dnsserver.dkim_sign(msg, "good", "dk.test", env.keys["good"])
                    for _ in range(7))
    a = ar(deliver(env.main, "bounce@pass.test", sigs + msg, marker))
    assert a.count("dkim=pass") == 5, a      # dkim_max_signatures = 5


# ------------------------------------------------------------ DMARC

def test_dmarc_pass_spf_alignment_only(env):
    msg, marker = mxtest.make_message(sender="carol@pass.test")
    a = ar(deliver(env.main, "carol@pass.test", msg, marker))
    assert "spf=pass" in a and "dkim=none" in a
    assert "dmarc=pass (p=reject" in a and "header.from=pass.test policy.dmarc=reject" in a


def test_dmarc_fail_p_none(env):
    msg, marker = mxtest.make_message(sender="dan@dnone.test")
    m = deliver(env.main, "dan@none.test", msg, marker)
    a = ar(m)
    assert "dmarc=fail (p=none sp=unset np=unset dis=none) header.from=dnone.test" in a, a
    assert "policy.dmarc=none" in a
    assert mxtest.header_values(m, "X-Spam-Flag") == ["NO"]


def test_dmarc_fail_p_quarantine(env):
    msg, marker = mxtest.make_message(sender="dan@dquar.test")
    m = deliver(env.main, "dan@none.test", msg, marker)
    a = ar(m)
    assert "dis=quarantine" in a and "policy.dmarc=quarantine" in a, a
    assert mxtest.header_values(m, "X-Spam-Flag") == ["YES"]
    assert "DMARC_QUARANTINE" in mxtest.header_values(m, "X-Spam-Status")[0]


def test_dmarc_fail_p_reject(env):
    msg, _ = mxtest.make_message(sender="dan@drej.test")
    r = refuse(env.main, "dan@none.test", msg)
    mxtest.assert_reply(r, 550, "5.7.1")
    assert "DMARC policy of drej.test" in r.text


def test_dmarc_pct_ignored_t_downgrades_reject(env):
    # RFC 9989 removed pct: pct=0 no longer softens p=reject ...
    msg, _ = mxtest.make_message(sender="dan@dpct.test")
    mxtest.assert_reply(refuse(env.main, "dan@none.test", msg), 550, "5.7.1")
    # ... t=y does: reject is applied as quarantine
    msg, marker = mxtest.make_message(sender="dan@dtest.test")
    m = deliver(env.main, "dan@none.test", msg, marker)
    a = ar(m)
    assert "t=y" in a and "dis=quarantine" in a and "policy.dmarc=reject" in a, a
    assert mxtest.header_values(m, "X-Spam-Flag") == ["YES"]


def test_dmarc_subdomain_sp_via_org_domain(env):
    msg, marker = mxtest.make_message(sender="eve@sub.org.test")
    a = ar(deliver(env.main, "eve@none.test", msg, marker))
    assert "dmarc=fail (p=reject sp=none np=unset record=org.test dis=none)" in a, a
    assert "header.from=sub.org.test policy.dmarc=none polrec.domain=org.test" in a
    # no sp: the org domain's p=reject applies to its subdomains
    msg, _ = mxtest.make_message(sender="eve@sub.drej.test")
    mxtest.assert_reply(refuse(env.main, "eve@none.test", msg), 550, "5.7.1")


def test_dmarc_strict_spf_alignment(env):
    msg, _ = mxtest.make_message(sender="f@strict.test")
    r = refuse(env.main, "f@sub.strict.test", msg)
    mxtest.assert_reply(r, 550, "5.7.1")


@pytest.mark.parametrize("froms,what", [
    (["From: a@pass.test", "From: b@pass.test"], "2 From: addresses"),
    (["From: a@pass.test, b@other.test"], "2 From: addresses"),
    ([], "no From: address"),
])
def test_from_must_be_exactly_one(env, froms, what):
    hdr = "\r\n".join(froms + ["To: user@example.test", "Subject: x"])
    msg = (hdr + "\r\n\r\nbody\r\n").encode()
    r = refuse(env.main, "a@pass.test", msg)
    mxtest.assert_reply(r, 550, "5.7.1")
    assert what in r.text


def test_dmarc_exemptions(env):
    msg, marker = mxtest.make_message(sender="g@exempt.test")
    a = ar(deliver(env.opts, "g@none.test", msg, marker))
    assert "dmarc=fail" in a and "override=exempt domain exempt.test" in a, a
    msg, marker = mxtest.make_message(sender="g@drej.test")
    a = ar(deliver(env.opts, "g@none.test", msg, marker, source="127.0.0.4"))
    assert "dmarc=fail" in a and "override=exempt client 127.0.0.4" in a, a
    msg, _ = mxtest.make_message(sender="g@drej.test")
    mxtest.assert_reply(refuse(env.opts, "g@none.test", msg), 550, "5.7.1")


# ------------------------------------------------------------ headers, score

def test_forged_headers_removed(env):
    msg, marker = mxtest.make_message(sender="carol@pass.test", headers=(
        "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=evil@pass.test",
        "Authentication-Results: (forged) MX.EXAMPLE.TEST; dmarc=pass",
        "Authentication-Results: upstream.example; dkim=pass header.d=upstream.example",
        "X-Spam-Flag: NO", "X-Spam-Score: -100"))
    m = deliver(env.main, "carol@pass.test", msg, marker)
    vals = mxtest.header_values(m, "Authentication-Results")
    assert len(vals) == 2, vals
    assert vals[0].startswith("mx.example.test;") and "evil" not in vals[0]
    assert vals[1].startswith("upstream.example;")
    assert mxtest.header_values(m, "X-Spam-Score") == ["0.0"]
    assert mxtest.header_values(m, "X-Spam-Flag") == ["NO"]


def test_spam_headers_dnsbl_and_rdns(env):
    msg, marker = mxtest.make_message(sender="carol@pass.test")
    m = deliver(env.main, "carol@pass.test", msg, marker, source="127.0.0.3")
    assert mxtest.header_values(m, "X-Spam-Flag") == ["YES"]
    assert mxtest.header_values(m, "X-Spam-Score") == ["5.0"]
    st = mxtest.header_values(m, "X-Spam-Status")[0]
    assert st == "Yes, score=5.0 required=5.0 tests=DNSBL_bl.test,NO_RDNS", st
    msg, marker = mxtest.make_message(sender="h@dnone.test")
    m = deliver(env.main, "h@softfail.test", msg, marker)
    st = mxtest.header_values(m, "X-Spam-Status")[0]
    assert st.startswith("Yes, score=5.0 ") and "SPF_SOFTFAIL,DMARC_FAIL" in st, st
    assert env.main.wait_log(r"spf=softfail dkim=none dmarc=fail score=5\.0 action=quarantine",
                             mxtest.scaled(5))


# ------------------------------------------------------------ DNSSEC

def test_dnssec_secure_and_bogus(env):
    msg, marker = mxtest.make_message(sender="s@signed.test")
    a = ar(deliver(env.dnssec, "s@signed.test", msg, marker))
    assert "spf=pass (" in a and "; dnssec=secure) smtp.mailfrom=s@signed.test" in a, a
    msg, marker = mxtest.make_message(sender="s@bogus.test")
    a = ar(deliver(env.dnssec, "s@bogus.test", msg, marker))
    assert "spf=temperror" in a and "DNSSEC validation failed" in a, a
    # without the anchor the same answers are plain insecure data
    msg, marker = mxtest.make_message(sender="s@signed.test")
    a = ar(deliver(env.main, "s@signed.test", msg, marker))
    assert "spf=pass (" in a and "dnssec" not in a


# ------------------------------------------------------------ the loop never waits

class SilentDns:
    """A forwarder that reads queries and never answers, until told to
    answer everything SERVFAIL at once (so the gateway can drain)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.answer = threading.Event()
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._loop, daemon=True)
        self.th.start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                q, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            if self.answer.is_set() and len(q) >= 12:
                # same id and question, QR=1 RD RA, RCODE=2 (SERVFAIL)
                self.sock.sendto(q[:2] + bytes([0x81, 0x82]) + q[4:], peer)

    def close(self):
        self.stop.set()
        self.th.join(2)
        self.sock.close()


def test_banner_while_dns_hangs(env):
    # The resolver's only forwarder never answers: every policy job waits
    # for its DNS timeouts (seconds per message, 2 workers, 50 sessions).
    silent = SilentDns()
    gw = env.gateway("slow", workers=2, forwarder=f"127.0.0.1@{silent.port}",
                     limits={"max_connections_per_ip": "100", "max_connections": "200"})
    clients = []
    try:
        for i in range(50):
            c = gw.client()
            c.ehlo()
            c.send(f"MAIL FROM:<u{i}@slow.test>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n")
            clients.append(c)
        for c in clients:
            c.replies(3)
            c.send(b"From: u@slow.test\r\nSubject: s\r\n\r\nx\r\n.\r\n")
        t0 = time.monotonic()
        with gw.client() as fresh:
            assert fresh.banner.code == 220
            assert time.monotonic() - t0 < mxtest.scaled(1.0)
            mxtest.assert_reply(fresh.cmd("EHLO x.example"), 250)
            assert time.monotonic() - t0 < mxtest.scaled(1.0)
        # they are really waiting for the verdict
        assert all(c.pending(wait=0.01) == b"" for c in clients[-10:])
    finally:
        silent.answer.set()     # SERVFAIL from now on: the jobs end quickly
        for c in clients:
            c.close()
    try:
        assert gw.stop(timeout=mxtest.scaled(30)) == 0
    finally:
        silent.close()


def test_disabled_checks_not_stamped(env):
    gw = env.gateway("nospf", spf="no", dmarc="no")
    msg, marker = signed(env.keys["good"])
    m = deliver(gw, "bob@fail.test", msg, marker)
    a = ar(m)
    assert a.startswith("mx.example.test; dkim=pass (2048-bit key) header.d=dk.test"), a
    assert "spf=" not in a and "dmarc=" not in a
    assert mxtest.header_values(m, "Received-SPF") == []
    assert mxtest.header_values(m, "X-Spam-Flag") == ["NO"]
    assert gw.wait_log(r"dkim=pass score=0\.0 action=accept", mxtest.scaled(5))
