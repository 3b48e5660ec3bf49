"""DNSSEC by default (issue #12, NIST SP 800-177 rec. 4-2, 4-7): [dns]
trust_anchor_file = auto turns validation on where the root trust anchor is
installed ([dns] root_anchor_file, Debian dns-root-data), through an RFC 5011
auto-trust-anchor file seeded in the queue directory; off, and said so by
`mxgate status`, where there is none.  A test zone signed with ldns stands in
for the root: its DS record is the "installed" anchor.  The A-R comment says
dnssec=secure for a DKIM key and a DMARC record that validated; a bogus DKIM
key or DMARC record is a temperror, never a pass.
"""
import pytest

import dnsserver
import mxtest

RCPT = "user@example.test"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("dnssecauto")
    dns = dnsserver.UnboundServer(d)
    key, ed_txt = dnsserver.make_ed25519_key()
    ta = dns.add_signed_zone("signed.test", [
        ("signed.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
        ("ed._domainkey.signed.test", "TXT", ed_txt),
        ("_dmarc.signed.test", "TXT", "v=DMARC1; p=reject"),
    ])
    # a zone whose DKIM key record was changed after signing: bogus
    ta_bogus = dns.add_signed_zone("bogus.test", [
        ("ed._domainkey.bogus.test", "TXT", ed_txt),
    ], tamper=True)
    # a zone whose DMARC record was changed after signing: bogus
    ta_bogus2 = dns.add_signed_zone("bogusdmarc.test", [
        ("bogusdmarc.test", "A", "192.0.2.1"),
        ("_dmarc.bogusdmarc.test", "TXT", "v=DMARC1; p=none"),
    ], tamper=True)
    both = d / "three-anchors"
    both.write_text(open(ta).read() + open(ta_bogus).read() + open(ta_bogus2).read())
    dns.add("plain.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.start()
    gws = []

    def gateway(name, **dnsopts):
        extra = {"dns": {"forwarders": dns.forwarder, "timeout": "2s", **dnsopts},
                 "auth": {"spf": "yes", "dkim": "yes", "dmarc": "yes"}}
        gw = mxtest.Gateway(d / name, extra, dns=False)
        gws.append(gw)
        return gw.start()

    class Env:
        pass
    e = Env()
    e.dns, e.key, e.ta, e.both, e.gateway = dns, key, ta, str(both), gateway
    yield e
    for gw in gws:
        try:
            gw.stop()
        finally:
            gw.close()
    dns.close()


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
    vals = [v for v in mxtest.header_values(found[0], "Authentication-Results")
            if v.split(";")[0].strip().lower() == "mx.example.test"]
    assert len(vals) == 1, vals
    return vals[0]


def signed_msg(env, domain="signed.test"):
    msg, marker = mxtest.make_message(sender=f"alice@{domain}")
    return dnsserver.dkim_sign(msg, "ed", domain, env.key, algo=b"ed25519-sha256") + msg, \
        marker


def status(gw):
    p = gw.cli("status", check=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("dnssec: ")]
    assert len(lines) == 1, p.stdout
    return lines[0]


def test_auto_with_anchor_validates(env):
    gw = env.gateway("auto", trust_anchor_file="auto", root_anchor_file=env.ta)
    autr = gw.queue_dir / "root.key.autr"
    st = status(gw)
    assert st == f"dnssec: on (auto: {env.ta}, RFC 5011 state in {autr})", st
    assert autr.exists() and "DS" in autr.read_text()
    assert gw.wait_log(r"dnssec=on \(auto: ", mxtest.scaled(5))
    msg, marker = signed_msg(env)
    a = deliver(gw, "bounce@signed.test", msg, marker)
    assert "spf=pass (" in a and "; dnssec=secure) smtp.mailfrom=bounce@signed.test" in a, a
    assert "dkim=pass (ed25519-sha256; dnssec=secure) header.d=signed.test" in a, a
    assert "dmarc=pass (" in a and "; dnssec=secure) header.from=signed.test" in a, a
    # an unsigned zone under no anchor is insecure, not bogus: it still passes
    msg, marker = mxtest.make_message(sender="bob@plain.test")
    a = deliver(gw, "bob@plain.test", msg, marker)
    assert "spf=pass (" in a and "dnssec" not in a, a


def test_auto_without_anchor_is_off_and_says_so(env):
    missing = env.dns.dir / "no-such-root.key"
    gw = env.gateway("noanchor", trust_anchor_file="auto", root_anchor_file=str(missing))
    st = status(gw)
    assert st.startswith(f"dnssec: off (auto: no root trust anchor at {missing}"), st
    assert not (gw.queue_dir / "root.key.autr").exists()
    msg, marker = signed_msg(env)
    a = deliver(gw, "bounce@signed.test", msg, marker)
    assert "dkim=pass (ed25519-sha256) header.d=signed.test" in a, a
    assert "dnssec" not in a, a


def test_none_is_off(env):
    gw = env.gateway("none", trust_anchor_file="none", root_anchor_file=env.ta)
    assert status(gw) == "dnssec: off (trust_anchor_file = none)"
    assert not (gw.queue_dir / "root.key.autr").exists()


def test_default_is_auto(env):
    # the embedded default: auto with Debian's path (no explicit [dns] keys)
    gw = env.gateway("default", trust_anchor_file=None)
    st = status(gw)
    assert st.startswith("dnssec: on (auto: /usr/share/dns/root.key,") or \
        st.startswith("dnssec: off (auto: no root trust anchor at /usr/share/dns/root.key"), st


def test_bogus_key_is_temperror_never_pass(env):
    gw = env.gateway("static", trust_anchor_file=env.both)
    assert status(gw) == f"dnssec: on (trust_anchor_file {env.both})"
    msg, marker = signed_msg(env, "bogus.test")
    a = deliver(gw, "bounce@signed.test", msg, marker)
    assert "dkim=temperror (key lookup failed DNSSEC validation) header.d=bogus.test" in a, a
    assert "dkim=pass" not in a, a


def test_bogus_dmarc_record_is_temperror(env):
    # dmarc_temperror = tempfail (default): 451, the sender retries
    gw = env.gateway("static2", trust_anchor_file=env.both)
    msg, _ = mxtest.make_message(sender="alice@bogusdmarc.test")
    with gw.client() as c:
        c.ehlo()
        r = c.transaction("bounce@signed.test", [RCPT], msg, expect_queued=False)
    mxtest.assert_reply(r, 451)
    assert "DMARC" in str(r) and "DNSSEC validation failed" in str(r), r
    assert gw.wait_log(r"dmarc=temperror", mxtest.scaled(5))
