"""ARC (RFC 8617) against an independent implementation, both ways: dkimpy
(Debian python3-dkim, `dkim.arc_sign` / `dkim.arc_verify`) seals messages
that mxgate verifies, and verifies the seal mxgate puts on what it relays.

Real parts only: the real mxgate binary, a real DNS server (unbound,
dnsserver.py) on loopback holding the sealers' keys and the senders' SPF
and DMARC records, keys made with openssl at test time, delivered .eml
files read back from the directory route.  mxgate's own key record is taken
from `mxgate dns-records`, so that output is checked too.

Gateways: `gw` seals with rsa-sha256 and trusts lists.test as a sealer;
`ed` seals with ed25519-sha256.
"""

import base64
import http.client
import hashlib
import re
import subprocess

import authres  # noqa: F401  (dkim.arc_sign needs python3-authres: never skipped)
import dkim
import pytest

import dnsserver
import mxtest
from downstream import Downstream, relay_extra

RCPT = "user@example.test"
LIST_BOUNCE = "list-bounces@lists.test"  # a list's envelope sender


def _openssl_key(path, algorithm):
    args = ["openssl", "genpkey", "-algorithm", algorithm, "-out", str(path)]
    if algorithm == "RSA":
        args += ["-pkeyopt", "rsa_keygen_bits:2048"]
    subprocess.run(args, check=True, capture_output=True)
    return path


def _selector_record(gw, selector, domain):
    """The TXT text `mxgate dns-records` prints for the ARC selector."""
    out = gw.cli("dns-records", check=True).stdout
    m = re.search(rf"^{re.escape(selector)}\._domainkey\.{re.escape(domain)}\.\s+\d+\s+IN\s+TXT\s+(.*)$",
                  out, re.M)
    assert m, out
    return "".join(re.findall(r'"([^"]*)"', m.group(1)))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("arc")
    dns = dnsserver.UnboundServer(d)
    records = {}

    def txt(name, value):
        dns.add_txt(name, value)
        records[name] = value

    # forwarders that seal with dkimpy: a trusted list and an untrusted one
    fwd_key, fwd_txt = dnsserver.make_dkim_key(d, 2048, "fwd")
    evil_key, evil_txt = dnsserver.make_dkim_key(d, 2048, "evil")
    txt("fwd._domainkey.lists.test", fwd_txt)
    txt("evil._domainkey.evil.test", evil_txt)
    # a trusted sealer whose key answer fails DNSSEC validation (bogus),
    # for a gateway given the zone's trust anchor
    bogus_ta = dns.add_signed_zone("boguslist.test",
                                   [("fwd._domainkey.boguslist.test", "TXT", fwd_txt)],
                                   tamper=True)
    # sealers whose DNS never answers: one trusted, one not
    dns.blackhole("slowlist.test")
    dns.blackhole("slowother.test")
    # senders: drej.test publishes p=reject and an SPF that fails us
    dns.add("drej.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add("_dmarc.drej.test", "TXT", "v=DMARC1; p=reject")
    dns.add("pass.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    # the list's own bounce address passes SPF (not aligned with drej.test)
    dns.add("lists.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add("_dmarc.pass.test", "TXT", "v=DMARC1; p=none")
    rsa_key = _openssl_key(d / "arc-rsa.pem", "RSA")
    ed_key = _openssl_key(d / "arc-ed.pem", "ED25519")
    dns.start()
    gws = []

    def gateway(name, arc, more=None):
        extra = {"dns": {"forwarders": dns.forwarder, "timeout": "2s"},
                 "auth": {"spf": "yes", "dkim": "yes", "dmarc": "yes",
                          "dmarc_enforcement": "reject"},
                 "arc": arc}
        extra.update(more or {})
        gw = mxtest.Gateway(d / name, extra, dns=False)
        gws.append(gw)
        return gw.start()

    class Env:
        pass
    e = Env()
    e.dns, e.dir, e.records, e.gateway = dns, d, records, gateway
    e.bogus_ta = bogus_ta
    e.rsa_arc = {"enabled": "yes", "seal": "yes", "selector": "mx2026",
                 "domain": "example.test", "key_file": str(rsa_key),
                 "trusted_sealers": "lists.test, slowlist.test"}
    e.fwd_key, e.evil_key = fwd_key, evil_key
    e.gw = gateway("rsa", e.rsa_arc)
    e.ed = gateway("ed", {"enabled": "yes", "seal": "yes", "selector": "ed2026",
                          "domain": "example.test", "key_file": str(ed_key),
                          "algorithm": "ed25519-sha256"})
    # mxgate's own key records, as the postmaster would publish them
    records["mx2026._domainkey.example.test"] = _selector_record(e.gw, "mx2026", "example.test")
    records["ed2026._domainkey.example.test"] = _selector_record(e.ed, "ed2026", "example.test")
    yield e
    problems = []
    for gw in gws:
        try:
            rc = gw.stop()
            if rc not in (0, None):
                problems.append(f"exit {rc}\n{gw.log_tail(40)}")
        finally:
            gw.close()
    dns.close()
    assert not problems, "\n".join(problems)


def dnsfunc(env):
    def f(name, timeout=5):
        v = env.records.get(name.decode().rstrip("."))
        return v.encode() if v is not None else None
    return f


def deliver(gw, mail_from, msg, marker):
    gw.send(mail_from, [RCPT], msg)
    found = []

    def look():
        for m in gw.mailbox_messages():
            if marker.encode() in m:
                found.append(m)
                return True
        return False
    mxtest.wait_for(look, mxtest.scaled(10), what=f"delivery of {marker}")
    return found[0]


def refuse(gw, mail_from, msg):
    with gw.client() as c:
        c.ehlo()
        return c.transaction(mail_from, [RCPT], msg, expect_queued=False)


def ar(msg):
    vals = [v for v in mxtest.header_values(msg, "Authentication-Results")
            if v.split(";")[0].strip().lower() == "mx.example.test"]
    assert len(vals) == 1, vals
    return vals[0]


def sealed(key, domain, selector, *, sender, dmarc="pass", srv_id=None, body="hello\r\n",
           prior=b"", hfrom=None):
    """A message forwarded through a sealer: an A-R from the sealer's ADMD
    (its own DMARC result for the original message), then dkimpy's ARC set
    on top.  prior: an existing chain (bytes of header fields) to extend."""
    msg, marker = mxtest.make_message(sender=sender, body=body)
    srv = srv_id or domain
    hdom = hfrom or sender.split("@")[1]
    arh = (f"Authentication-Results: {srv}; spf=pass smtp.mailfrom={sender};\r\n"
           f"\tdmarc={dmarc} header.from={hdom}\r\n").encode()
    if prior:
        arh = (f"Authentication-Results: {srv}; arc=pass;\r\n"
               f"\tdmarc={dmarc} header.from={hdom}\r\n").encode()
    full = arh + prior + msg
    arc_set = dkim.arc_sign(full, selector.encode(), domain.encode(), key, srv.encode(),
                            include_headers=[b"from", b"to", b"subject", b"date",
                                             b"message-id"])
    assert len(arc_set) == 3, arc_set
    return b"".join(arc_set) + full, marker


def arc_sets(msg):
    """{instance: {name: value}} of the ARC fields of a delivered message."""
    out = {}
    for name in ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"):
        for v in mxtest.header_values(msg, name):
            i = int(re.match(r"\s*i\s*=\s*(\d+)", v).group(1))
            out.setdefault(i, {})[name] = v
    return out


# ------------------------------------------------------------ mxgate seals, dkimpy verifies

def test_seal_first_hop_verifies_with_dkimpy(env):
    msg, marker = mxtest.make_message(sender="bob@pass.test")
    m = deliver(env.gw, "bob@pass.test", msg, marker)
    assert "arc=none" in ar(m), ar(m)
    sets = arc_sets(m)
    assert list(sets) == [1] and len(sets[1]) == 3, sets
    assert "cv=none" in sets[1]["ARC-Seal"] and "d=example.test" in sets[1]["ARC-Seal"]
    # the AAR carries our verdict, under our authserv-id
    assert sets[1]["ARC-Authentication-Results"].startswith("i=1; mx.example.test;")
    assert "spf=pass" in sets[1]["ARC-Authentication-Results"]
    cv, results, why = dkim.arc_verify(m, dnsfunc=dnsfunc(env))
    assert cv == dkim.CV_Pass, (why, results)
    assert results[0]["ams-valid"] and results[0]["as-valid"], results


def test_seal_detected_as_broken_when_body_changes(env):
    """dkimpy is not just saying yes: the same message, changed, fails."""
    msg, marker = mxtest.make_message(sender="bob@pass.test", body="original text\r\n")
    m = deliver(env.gw, "bob@pass.test", msg, marker)
    assert dkim.arc_verify(m, dnsfunc=dnsfunc(env))[0] == dkim.CV_Pass
    bad = m.replace(b"original text", b"changed text!")
    assert dkim.arc_verify(bad, dnsfunc=dnsfunc(env))[0] == dkim.CV_Fail


def test_ed25519_seal_verifies_with_dkimpy(env, monkeypatch):
    """RFC 8617 registers rsa-sha256 only, so dkimpy's ARC code accepts only
    that; its DKIM code does ed25519-sha256 (RFC 8463).  Allowing the
    algorithm in its ARC table makes dkimpy check our Ed25519 seal with its
    own canonicalisation and PyNaCl."""
    monkeypatch.setitem(dkim.crypto.ARC_HASH_ALGORITHMS, b"ed25519-sha256", hashlib.sha256)
    msg, marker = mxtest.make_message(sender="bob@pass.test", body="ed  body \t\r\n\r\n\r\n")
    m = deliver(env.ed, "bob@pass.test", msg, marker)
    s = arc_sets(m)[1]["ARC-Seal"]
    assert "a=ed25519-sha256" in s, s
    cv, results, why = dkim.arc_verify(m, dnsfunc=dnsfunc(env))
    assert cv == dkim.CV_Pass, (why, results)


def test_seal_verifies_at_an_smtp_downstream(env):
    """Relayed over SMTP (dot-stuffed on the wire) to a real downstream: the
    bytes it receives verify with dkimpy - a forwarded message with an
    incoming chain, a DKIM signature, leading dots and trailing white space."""
    ds = Downstream().start()
    try:
        # no verdict may tag here, so no Subject is held back and moved up
        # (issue 13): the message must arrive byte for byte
        more = relay_extra([f"127.0.0.1:{ds.port}"])
        more["spam"] = {"quarantine_action": "deliver"}
        gw = env.gateway("smtp", env.rsa_arc, more)
        fwd, marker = sealed(env.fwd_key, "lists.test", "fwd", sender="bob@pass.test",
                             body=".leading dot\r\n..two\r\ntrailing  \t\r\n\r\n")
        key, txt = dnsserver.make_dkim_key(env.dir, 1024, "dk")
        env.records["dk._domainkey.pass.test"] = txt
        fwd = dnsserver.dkim_sign(fwd, "dk", "pass.test", key) + fwd
        gw.send("bob@pass.test", [RCPT], fwd)
        ds.wait_messages(1)
        [rec] = ds.find(marker)
        assert rec.data.endswith(fwd)
        sets = arc_sets(rec.data)
        assert sorted(sets) == [1, 2] and "cv=pass" in sets[2]["ARC-Seal"], sets
        assert "dkim-signature" in sets[2]["ARC-Message-Signature"]
        cv, results, why = dkim.arc_verify(rec.data, dnsfunc=dnsfunc(env))
        assert cv == dkim.CV_Pass, (why, results)
    finally:
        ds.stop()


# ------------------------------------------------------------ the seal after content edits

WARN = {"enabled": "yes", "subject_tag": "[EXT]", "banner_text": "CAUTION: outside sender.",
        "banner_html": "<b>CAUTION</b>: outside sender."}


@pytest.fixture(scope="module")
def warn_gw(env):
    """Seals, warns: the banner and the subject tag come after the verdict."""
    return env.gateway("warn", env.rsa_arc, {"warning": WARN})


def _verify(env, m):
    cv, results, why = dkim.arc_verify(m, dnsfunc=dnsfunc(env))
    assert cv == dkim.CV_Pass, (why, results, m[:3000])
    assert results[0]["ams-valid"] and results[0]["as-valid"], results


ALT = ("--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n"
       "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
       "<html><body><p>html part</p></body></html>\r\n--b1--\r\n")


@pytest.mark.parametrize("shape", ["text/plain", "multipart/alternative"])
def test_seal_covers_the_warning_banner_and_tag(env, warn_gw, shape):
    """The banner rewrites the body and the tag the Subject after the
    verdict: the seal is made over the message as delivered (it was made
    before them, and dkimpy found a body hash mismatch: cv=fail)."""
    if shape == "text/plain":
        msg, marker = mxtest.make_message(sender="bob@pass.test", body="plain text\r\n",
                                          headers=("MIME-Version: 1.0",
                                                   "Content-Type: text/plain"))
    else:
        msg, marker = mxtest.make_message(
            sender="bob@pass.test", body=ALT,
            headers=("MIME-Version: 1.0",
                     'Content-Type: multipart/alternative; boundary="b1"'))
    m = deliver(warn_gw, "bob@pass.test", msg, marker)
    assert mxtest.header_values(m, "X-MXGate-Warning")[0].startswith("external; banner=added")
    assert mxtest.header_values(m, "Subject") == [f"[EXT] test {marker}"]
    assert m.count(b"CAUTION") == (1 if shape == "text/plain" else 2), m
    sets = arc_sets(m)
    assert list(sets) == [1] and "cv=none" in sets[1]["ARC-Seal"], sets
    assert "subject" in sets[1]["ARC-Message-Signature"]
    # the ARC set stays where the verdict job put it: after Received
    names = [n.lower() for n, _ in mxtest.parse_headers(m)]
    at = names.index("received")
    assert names[at:at + 4] == ["received", "arc-seal", "arc-message-signature",
                                "arc-authentication-results"], names
    _verify(env, m)
    # and dkimpy is not just saying yes: the banner taken out breaks it
    plain = m.replace(b"CAUTION: outside sender.\r\n\r\n", b"", 1)
    assert plain != m and dkim.arc_verify(plain, dnsfunc=dnsfunc(env))[0] == dkim.CV_Fail


@pytest.mark.parametrize("which", ["policy-job", "deferred"])
def test_seal_field_limit_counts_the_fields_as_received(env, warn_gw, which):
    """At most 512 header fields as received are sealed, by the policy job
    (no verdict can edit: quarantine_action = deliver) and by the seal made
    after the content edits (warn) alike: mxgate's own fields in front
    (Received, Authentication-Results, the re-emitted Subject, ...) do not
    count.  The deferred seal counted them, and a message of 505..512
    fields went out unsealed (red team finding 5)."""
    gw = warn_gw if which == "deferred" else env.gateway(
        "limit", env.rsa_arc, {"spam": {"quarantine_action": "deliver"}})
    base = len(mxtest.parse_headers(mxtest.make_message()[0]))
    for total, want in ((512, True), (513, False)):
        fill = tuple(f"X-Filler-{i}: v" for i in range(total - base))
        msg, marker = mxtest.make_message(sender="bob@pass.test", headers=fill)
        assert len(mxtest.parse_headers(msg)) == total
        m = deliver(gw, "bob@pass.test", msg, marker)
        if want:
            assert len(arc_sets(m)) == 1, (total, m[:1500])
            _verify(env, m)
        else:
            assert not arc_sets(m), (total, arc_sets(m))


def test_seal_covers_the_warning_subject_tag_alone(env):
    """No banner (subject tag only): the re-emitted, tagged Subject is what
    the AMS signs; an incoming chain is extended with cv=pass."""
    gw = env.gateway("warntag", env.rsa_arc,
                     {"warning": dict(WARN, banner_text="none", banner_html="none")})
    fwd, marker = sealed(env.fwd_key, "lists.test", "fwd", sender="bob@pass.test")
    m = deliver(gw, "bob@pass.test", fwd, marker)
    assert mxtest.header_values(m, "X-MXGate-Warning")[0].startswith(
        "external; banner=skipped reason=off"), m[:2000]
    assert mxtest.header_values(m, "Subject") == [f"[EXT] test {marker}"]
    sets = arc_sets(m)
    assert sorted(sets) == [1, 2] and "cv=pass" in sets[2]["ARC-Seal"], sets
    _verify(env, m)


def test_unedited_message_through_a_warning_gateway_is_sealed(env):
    """An internal sender is not warned: the seal made at the commit (the
    config could edit) covers the untouched message."""
    gw = env.gateway("warnint", env.rsa_arc,
                     {"warning": dict(WARN, internal_domains="pass.test")})
    msg, marker = mxtest.make_message(sender="bob@pass.test", body="internal\r\n")
    m = deliver(gw, "bob@pass.test", msg, marker)
    assert not mxtest.header_values(m, "X-MXGate-Warning")
    assert mxtest.header_values(m, "Subject") == [f"test {marker}"]
    _verify(env, m)


@pytest.fixture(scope="module")
def rspamd():
    from test_scan_rspamd import Rspamd
    r = Rspamd().start()
    yield r
    r.stop()


def test_seal_covers_the_rspamd_subject_tag(env, rspamd):
    """rspamd's verdict (add header) tags the Subject after the verdict job."""
    gw = env.gateway("rspamd", env.rsa_arc,
                     {"rspamd": {"address": f"127.0.0.1:{rspamd.port}", "timeout": "10s"}})
    msg, marker = mxtest.make_message("offer", sender="bob@pass.test",
                                      body="buy viagra-test-word now\r\n")
    m = deliver(gw, "bob@pass.test", msg, marker)
    assert mxtest.header_values(m, "Subject") == [f"[SPAM] offer {marker}"], m[:2000]
    _verify(env, m)


def test_quarantined_warned_message_released_with_a_valid_seal(env, rspamd):
    """Quarantined (rspamd reject -> quarantine) and warned: sealed at the
    commit as it would be delivered; the release delivers a seal that
    verifies (the release stamp and the quarantine field are not signed)."""
    gw = env.gateway("rspamdq", env.rsa_arc,
                     {"rspamd": {"address": f"127.0.0.1:{rspamd.port}", "timeout": "10s",
                                 "reject_action": "quarantine"},
                      "warning": WARN})
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    msg, marker = mxtest.make_message(sender="bob@pass.test", body=gtube + "\r\n")
    with gw.client() as c:
        c.ehlo()
        r = c.transaction("bob@pass.test", [RCPT], msg)
    qid = mxtest.queued_id(r)
    gw.wait_log(r"quarantined reason=spam id=" + qid)
    assert "ARC-Seal: i=1;" in (gw.queue_dir / "quarantine" / qid).read_text()
    gw.cli("quarantine", "release", qid, check=True)
    m = gw.wait_for_marker(marker)
    assert mxtest.header_values(m, "X-MXGate-Warning")[0].startswith("external; banner=added")
    assert mxtest.header_values(m, "X-Mxgate-Quarantine")[0].startswith("reason=spam;")
    _verify(env, m)


# ------------------------------------------------------------ dkimpy seals, mxgate verifies

def test_incoming_chain_passes_and_is_extended(env):
    fwd, marker = sealed(env.fwd_key, "lists.test", "fwd", sender="bob@pass.test")
    # dkimpy agrees with itself before we judge
    assert dkim.arc_verify(fwd, dnsfunc=dnsfunc(env))[0] == dkim.CV_Pass
    m = deliver(env.gw, "bob@pass.test", fwd, marker)
    a = ar(m)
    assert "arc=pass (i=1 sealed by lists.test) smtp.remote-ip=127.0.0.1" in a, a
    sets = arc_sets(m)
    assert sorted(sets) == [1, 2], sets
    assert "cv=pass" in sets[2]["ARC-Seal"], sets[2]
    assert "arc=pass" in sets[2]["ARC-Authentication-Results"]
    cv, results, why = dkim.arc_verify(m, dnsfunc=dnsfunc(env))
    assert cv == dkim.CV_Pass, (why, results)
    assert [r["instance"] for r in results] == [2, 1]


def test_two_hop_chain_passes(env):
    first, marker = sealed(env.evil_key, "evil.test", "evil", sender="bob@pass.test")
    hdr_end = first.index(b"\r\n\r\n") + 2
    # the second hop seals the message as it received it (the first chain)
    body = first[hdr_end + 2:].decode()
    prior = first[:hdr_end]
    # rebuild: second sealer's A-R + its ARC set over the whole message
    srv = b"lists.test"
    arh = b"Authentication-Results: lists.test; arc=pass; dmarc=pass header.from=pass.test\r\n"
    full = arh + prior + b"\r\n" + body.encode()
    arc2 = dkim.arc_sign(full, b"fwd", b"lists.test", env.fwd_key, srv,
                         include_headers=[b"from", b"to", b"subject"])
    fwd = b"".join(arc2) + full
    assert dkim.arc_verify(fwd, dnsfunc=dnsfunc(env))[0] == dkim.CV_Pass
    m = deliver(env.gw, "bob@pass.test", fwd, marker)
    assert "arc=pass (i=2 sealed by lists.test)" in ar(m), ar(m)
    assert dkim.arc_verify(m, dnsfunc=dnsfunc(env))[0] == dkim.CV_Pass


@pytest.mark.parametrize("tamper,why", [
    ("body", "body hash did not verify"),
    ("aar", "AS: signature did not verify"),
    ("subject", "AMS: signature did not verify"),
    ("dup-tag", "duplicate tag"),
    ("cv", "cv="),
])
def test_tampered_chain_fails(env, tamper, why):
    fwd, marker = sealed(env.fwd_key, "lists.test", "fwd", sender="bob@pass.test",
                         body="list text\r\n")
    if tamper == "body":
        fwd = fwd.replace(b"list text", b"evil text")
    elif tamper == "aar":
        fwd = re.sub(rb"(ARC-Authentication-Results: i=1; lists.test;[^\r]*)spf=pass",
                     rb"\1spf=fail", fwd, count=1)
    elif tamper == "subject":
        fwd = fwd.replace(b"Subject: test", b"Subject: TEST")
    elif tamper == "dup-tag":
        fwd = fwd.replace(b"ARC-Seal: i=1;", b"ARC-Seal: i=1; s=x;", 1)
    elif tamper == "cv":
        fwd = fwd.replace(b"cv=none", b"cv=pass", 1)
    assert dkim.arc_verify(fwd, dnsfunc=dnsfunc(env))[0] != dkim.CV_Pass
    m = deliver(env.gw, "bob@pass.test", fwd, marker)
    a = ar(m)
    assert "arc=fail (" in a and why in a, a
    sets = arc_sets(m)
    assert "cv=fail" in sets[2]["ARC-Seal"], sets
    # our cv=fail seal is still well-formed: dkimpy reads it as a terminated chain
    assert dkim.arc_verify(m, dnsfunc=dnsfunc(env))[0] != dkim.CV_Pass


# ------------------------------------------------------------ trusted-forwarder override

def test_dmarc_reject_without_chain_is_refused(env):
    """The baseline the override changes: SPF not aligned, no DKIM, p=reject."""
    msg, _ = mxtest.make_message(sender="alice@drej.test")
    r = refuse(env.gw, LIST_BOUNCE, msg)
    mxtest.assert_reply(r, 550, "5.7.1")


def test_trusted_forwarder_overrides_dmarc_reject(env):
    """A list re-sends alice@drej.test's post from its own address: SPF
    passes for lists.test, not aligned with the From: domain, no DKIM - a
    DMARC fail under p=reject.  The list, a trusted sealer, recorded
    dmarc=pass when it received the post: delivered, not quarantined."""
    fwd, marker = sealed(env.fwd_key, "lists.test", "fwd", sender="alice@drej.test")
    m = deliver(env.gw, LIST_BOUNCE, fwd, marker)
    assert mxtest.header_values(m, "X-Spam-Flag") == ["NO"], m[:2000]
    a = ar(m)
    assert "dmarc=fail (" in a and "dis=none; override=arc trusted sealer lists.test, i=1 "\
        "dmarc=pass" in a, a
    assert "arc=pass" in a
    env.gw.wait_log(r"arc override=dmarc sealer=lists.test from=drej.test")
    assert dkim.arc_verify(m, dnsfunc=dnsfunc(env))[0] == dkim.CV_Pass


@pytest.mark.parametrize("case", ["untrusted-sealer", "first-hop-dmarc-fail", "tampered",
                                  "other-from-domain"])
def test_override_needs_trust_validity_and_dmarc_pass(env, case):
    if case == "untrusted-sealer":
        fwd, _ = sealed(env.evil_key, "evil.test", "evil", sender="alice@drej.test")
    elif case == "first-hop-dmarc-fail":
        fwd, _ = sealed(env.fwd_key, "lists.test", "fwd", sender="alice@drej.test",
                        dmarc="fail")
    elif case == "tampered":
        fwd, _ = sealed(env.fwd_key, "lists.test", "fwd", sender="alice@drej.test",
                        body="pay invoice 1\r\n")
        fwd = fwd.replace(b"invoice 1", b"invoice 2")
    else:
        # the trusted sealer vouched for another From: domain
        fwd, _ = sealed(env.fwd_key, "lists.test", "fwd", sender="alice@drej.test",
                        hfrom="pass.test")
    r = refuse(env.gw, LIST_BOUNCE, fwd)
    mxtest.assert_reply(r, 550, "5.7.1")


@pytest.mark.parametrize("sealer,code,enh", [("slowlist.test", 451, "4.4.3"),
                                              ("slowother.test", 550, "5.7.1")])
def test_unreachable_key_of_trusted_forwarder_defers(env, sealer, code, enh):
    """The trusted list's key cannot be looked up (DNS times out): whether
    its chain holds is unknown, so the DMARC reject becomes a 451 and the
    list retries.  An untrusted sealer's chain could not help: 550."""
    fwd, _ = sealed(env.fwd_key, sealer, "fwd", sender="alice@drej.test")
    r = refuse(env.gw, LIST_BOUNCE, fwd)
    mxtest.assert_reply(r, code, enh)
    if code == 451:
        assert "trusted forwarder slowlist.test" in r.text, r.text


def test_bogus_key_of_trusted_forwarder_defers_and_never_passes(env):
    """A DNSSEC-bogus key answer is a temporary error like a timeout, never
    a verdict: the trusted list's chain is unverified, so a DMARC reject
    becomes 451 (was 550: bogus was taken for a broken chain); a message
    that passes DMARC is delivered with arc=fail naming the validation
    failure, and no override is ever taken from such a chain."""
    gw = env.gateway("bogus", dict(env.rsa_arc, trusted_sealers="boguslist.test"),
                     {"dns": {"forwarders": env.dns.forwarder, "timeout": "2s",
                              "trust_anchor_file": env.bogus_ta}})
    fwd, _ = sealed(env.fwd_key, "boguslist.test", "fwd", sender="alice@drej.test")
    r = refuse(gw, LIST_BOUNCE, fwd)
    mxtest.assert_reply(r, 451, "4.4.3")
    assert "trusted forwarder boguslist.test" in r.text, r.text
    fwd, marker = sealed(env.fwd_key, "boguslist.test", "fwd", sender="bob@pass.test")
    a = ar(deliver(gw, "bob@pass.test", fwd, marker))
    assert "arc=fail (i=1 key lookup failed DNSSEC validation)" in a, a
    assert "override" not in a


# ------------------------------------------------------------ config

def test_check_config_requires_key_for_seal(env, tmp_path):
    gw = mxtest.Gateway(tmp_path / "cc", {"arc": {"seal": "yes"}}, dns=False)
    try:
        p = gw.cli("check-config")
        assert p.returncode != 0
        for why in ("seal = yes needs enabled = yes", "seal = yes needs selector",
                    "seal = yes needs domain", "seal = yes needs key_file"):
            assert why in p.stderr, p.stderr
    finally:
        gw.close()


def test_bad_key_found_by_check_config_and_start(env, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    ed = tmp_path / "ed.pem"
    _openssl_key(ed, "ED25519")
    for key, alg, why in [(bad, "rsa-sha256", "not a PEM private key"),
                          (ed, "rsa-sha256", "not an RSA key")]:
        arc = dict(env.rsa_arc, key_file=str(key), algorithm=alg)
        gw = mxtest.Gateway(tmp_path / ("k" + key.stem), {"arc": arc}, dns=False)
        try:
            p = gw.cli("check-config")
            assert p.returncode == 2 and why in p.stderr, p.stderr
            with pytest.raises(AssertionError):
                gw.start(timeout=mxtest.scaled(5))
            assert why in gw.log_text()
        finally:
            gw.close()


def test_arc_alone_still_seals(env):
    """SPF, DKIM and DMARC all off: the policy engine still runs for ARC."""
    gw = env.gateway("alone", env.rsa_arc,
                     {"auth": {"spf": "no", "dkim": "no", "dmarc": "no"}})
    fwd, marker = sealed(env.fwd_key, "lists.test", "fwd", sender="bob@pass.test")
    m = deliver(gw, "bob@pass.test", fwd, marker)
    assert "arc=pass" in ar(m)
    assert sorted(arc_sets(m)) == [1, 2]
    assert dkim.arc_verify(m, dnsfunc=dnsfunc(env))[0] == dkim.CV_Pass


def test_dns_records_key_matches_private_key(env):
    txt = env.records["mx2026._domainkey.example.test"]
    assert txt.startswith("v=DKIM1; k=rsa; p="), txt
    der = subprocess.run(["openssl", "pkey", "-in", str(env.dir / "arc-rsa.pem"), "-pubout",
                          "-outform", "DER"], check=True, capture_output=True).stdout
    assert txt.split("p=", 1)[1] == base64.b64encode(der).decode()


# ------------------------------------------------------------ metrics

def test_metrics_count_results_overrides_and_seals(env):
    mport = mxtest.free_port()
    gw = env.gateway("metrics", env.rsa_arc, {"metrics": {"listen": f"127.0.0.1:{mport}"}})
    plain, m1 = mxtest.make_message(sender="bob@pass.test")
    good, m2 = sealed(env.fwd_key, "lists.test", "fwd", sender="alice@drej.test")
    bad, m3 = sealed(env.fwd_key, "lists.test", "fwd", sender="bob@pass.test", body="a\r\n")
    bad = bad.replace(b"\r\n\r\na\r\n", b"\r\n\r\nb\r\n")
    deliver(gw, "bob@pass.test", plain, m1)
    deliver(gw, LIST_BOUNCE, good, m2)
    deliver(gw, "bob@pass.test", bad, m3)
    c = http.client.HTTPConnection("127.0.0.1", mport, timeout=mxtest.scaled(5))
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()

    def val(sample):
        m = re.search(rf"^{re.escape(sample)} (\S+)$", body, re.M)
        return float(m.group(1)) if m else 0.0
    assert val('mxgate_arc_results_total{result="none"}') == 1, body
    assert val('mxgate_arc_results_total{result="pass"}') == 1
    assert val('mxgate_arc_results_total{result="fail"}') == 1
    assert val("mxgate_arc_overrides_total") == 1, [l for l in body.splitlines() if "mxgate_arc" in l]
    assert val('mxgate_arc_seals_total{outcome="sealed"}') == 3
    assert val('mxgate_arc_seals_total{outcome="failed"}') == 0
