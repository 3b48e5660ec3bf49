"""DKIM verdicts a downstream can trust (issue #12, DKIM): what mxgate
corrects around libopendkim, end to end over SMTP with a real DNS server on
loopback and signatures made by an independent implementation (dkimpy).

- a duplicated tag (two d=) is permerror, RFC 6376 3.2;
- an ed25519 signature whose key record has no k= (so rsa) fails, 3.6.1;
- l= leaving appended body bytes unsigned, and an unsigned extra instance
  of a signed single-use field (RFC 6376 8.15) are dkim=policy with
  [auth] dkim_strict = yes (the default), pass with dkim_strict = no;
- no false alarm: l= covering the whole body (trailing blank lines and
  white space included), over-signed fields;
- what libopendkim decides and mxgate keeps: h= without From never passes,
  key flag t=s, signature expiry x= (RFC 6376 3.5, 3.6.1).
"""
import time

import dkim
import pytest

import dnsserver
import mxtest

RCPT = "user@example.test"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("authdkim")
    dns = dnsserver.UnboundServer(d)
    keys = {}
    keys["good"], good_txt = dnsserver.make_dkim_key(d, 2048, "good")
    keys["ed"], ed_txt = dnsserver.make_ed25519_key()
    dns.add("pass.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add("dk.test", "TXT", "v=spf1 -all")
    dns.add("_dmarc.dk.test", "TXT", "v=DMARC1; p=none")
    dns.add_txt("good._domainkey.dk.test", good_txt)
    dns.add_txt("ed._domainkey.dk.test", ed_txt)
    # the same ed25519 key published without k= (RFC 6376 3.6.1: k=rsa)
    dns.add_txt("edrsa._domainkey.dk.test", ed_txt.replace("k=ed25519; ", ""))
    # a key record with a repeated tag (RFC 6376 3.2)
    dns.add_txt("dupkey._domainkey.dk.test", good_txt.replace("k=rsa;", "k=rsa; k=rsa;"))
    # t=s: i= must be d= exactly (RFC 6376 3.6.1)
    dns.add_txt("strict._domainkey.dk.test", good_txt.replace("k=rsa;", "k=rsa; t=s;"))
    dns.start()
    gws = {}

    def gateway(name, **auth):
        a = {"spf": "yes", "dkim": "yes", "dmarc": "yes"}
        a.update(auth)
        extra = {"dns": {"forwarders": dns.forwarder, "timeout": "1s"}, "auth": a}
        gw = mxtest.Gateway(d / name, extra, dns=False)
        gws[name] = gw
        return gw.start()

    class Env:
        pass
    e = Env()
    e.dns, e.keys = dns, keys
    e.strict = gateway("strict")                  # dkim_strict at its default
    e.lax = gateway("lax", dkim_strict="no")
    yield e
    problems = []
    for name, gw in gws.items():
        try:
            rc = gw.stop()
            if rc not in (0, None):
                problems.append(f"{name}: exit {rc}\n{gw.log_tail(40)}")
        finally:
            gw.close()
    dns.close()
    assert not problems, "\n".join(problems)


def deliver(gw, msg, marker, mail_from="bounce@pass.test"):
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


def ar(msg):
    vals = [v for v in mxtest.header_values(msg, "Authentication-Results")
            if v.split(";")[0].strip().lower() == "mx.example.test"]
    assert len(vals) == 1, vals
    return vals[0]


HDRS = [b"from", b"to", b"subject", b"date", b"message-id"]


def sign(msg, key, selector="good", algo=b"rsa-sha256", length=False, headers=HDRS,
         signer=dkim.DKIM, identity=None, canon=b"relaxed"):
    d = signer(msg, linesep=b"\r\n")
    return d.sign(selector.encode(), b"dk.test", key, canonicalize=(canon, canon),
                  include_headers=headers, length=length, signature_algorithm=algo,
                  identity=identity)


class NoFrom(dkim.DKIM):
    """A signer whose h= leaves From out (dkimpy refuses that itself)."""

    def gen_header(self, fields, include_headers, *a, **kw):
        include_headers = tuple(h for h in include_headers if h != b"from")
        fields = [(k, b" : ".join(include_headers) if k == b"h" else v) for k, v in fields]
        return super().gen_header(fields, include_headers, *a, **kw)


class DupD(dkim.DKIM):
    """A signer that writes d=bank.test before its own d=dk.test: both are
    in the signed DKIM-Signature field, so the signature is genuine."""

    def gen_header(self, fields, *a, **kw):
        fields = list(fields)
        i = [k for k, _ in fields].index(b"d")
        fields.insert(i, (b"d", b"bank.test"))
        return super().gen_header(fields, *a, **kw)


def expiring(t_offset, x_offset):
    """A signer writing t= and x= (RFC 6376 3.5 signature expiration)
    that many seconds from now; dkimpy writes no x= itself."""
    class Expiring(dkim.DKIM):
        def gen_header(self, fields, *a, **kw):
            now = int(time.time())
            fields = [(k, str(now + t_offset).encode() if k == b"t" else v)
                      for k, v in fields]
            i = [k for k, _ in fields].index(b"t")
            fields.insert(i + 1, (b"x", str(now + x_offset).encode()))
            return super().gen_header(fields, *a, **kw)
    return Expiring


# ------------------------------------------------------------ RFC 6376 3.2, 3.6.1

def test_duplicate_d_tag_is_permerror(env):
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    sig = sign(msg, env.keys["good"], signer=DupD)
    assert sig.count(b"d=") >= 2 and b"d=bank.test" in sig
    a = ar(deliver(env.strict, sig + msg, marker))
    assert "dkim=permerror (invalid signature: duplicate tag d=, RFC 6376 3.2)" in a, a
    assert "dkim=pass" not in a and "dmarc=pass" not in a, a


def test_duplicate_tag_in_key_record_is_permerror(env):
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    a = ar(deliver(env.strict, sign(msg, env.keys["good"], selector="dupkey") + msg, marker))
    assert "dkim=permerror (invalid key record: duplicate tag k=, RFC 6376 3.2)" in a, a


def test_ed25519_signature_with_rsa_key_record_fails(env):
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    sig = sign(msg, env.keys["ed"], selector="edrsa", algo=b"ed25519-sha256")
    a = ar(deliver(env.strict, sig + msg, marker))
    assert ("dkim=fail (key type k=rsa by default does not match a=ed25519-sha256, "
            "RFC 6376 3.6.1) header.d=dk.test header.s=edrsa") in a, a
    assert "dmarc=pass" not in a, a
    # the same key with k=ed25519 passes (RFC 8463)
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    sig = sign(msg, env.keys["ed"], selector="ed", algo=b"ed25519-sha256")
    assert "dkim=pass (ed25519-sha256) header.d=dk.test header.s=ed" in ar(
        deliver(env.strict, sig + msg, marker))


# ------------------------------------------------------------ l= (RFC 6376 8.2)

@pytest.mark.parametrize("canon", [b"relaxed", b"simple"])
def test_body_length_with_appended_content(env, canon):
    for gw, want in ((env.strict, "dkim=policy (l="), (env.lax, "dkim=pass (2048-bit key)")):
        msg, marker = mxtest.make_message(sender="alice@dk.test",
                                          body="Pay to IBAN DE00 1111.\r\n")
        sig = sign(msg, env.keys["good"], length=True, canon=canon)
        assert b"l=" in sig
        forged = sig + msg + b"\r\nCorrection: new IBAN XX99 6666.\r\n"
        a = ar(deliver(gw, forged, marker))
        assert want in a, a
        if gw is env.strict:
            assert "leaves 35 body bytes unsigned, RFC 6376 8.2)" in a, a
            assert "dmarc=pass" not in a, a


@pytest.mark.parametrize("canon,body,extra", [
    (b"relaxed", "Pay to IBAN DE00 1111.\r\n", b""),
    # what canonicalisation removes is not unsigned content
    (b"relaxed", "Pay to IBAN DE00 1111.  \r\n", b"\r\n\r\n"),
    (b"relaxed", "Two  spaces\r\n", b" \r\n\t\r\n"),
    (b"simple", "Pay to IBAN DE00 1111.  \r\n", b""),
    (b"simple", "Trailing empty lines\r\n", b"\r\n\r\n"),
])
def test_body_length_whole_body_passes(env, canon, body, extra):
    msg, marker = mxtest.make_message(sender="alice@dk.test", body=body)
    sig = sign(msg, env.keys["good"], length=True, canon=canon)
    a = ar(deliver(env.strict, sig + msg + extra, marker))
    assert "dkim=pass (2048-bit key) header.d=dk.test" in a, a


# ------------------------------------------------------------ RFC 6376 8.15

@pytest.mark.parametrize("field", ["Subject", "Reply-To"])
def test_extra_signed_single_use_field(env, field):
    for gw, want in ((env.strict, "dkim=policy (2 %s: fields, 1 signed" % field),
                     (env.lax, "dkim=pass (2048-bit key)")):
        msg, marker = mxtest.make_message(sender="alice@dk.test",
                                          headers=[f"{field}: original <a@dk.test>"]
                                          if field == "Reply-To" else ())
        sig = sign(msg, env.keys["good"], headers=HDRS + [b"reply-to"])
        # added on top: the signature still verifies (the bottom one is
        # signed), but readers show the top one
        forged = sig + f"{field}: URGENT new bank details <x@evil.test>\r\n".encode() + msg
        a = ar(deliver(gw, forged, marker))
        assert want in a, a
        if gw is env.strict:
            assert "RFC 6376 8.15) header.d=dk.test" in a, a


def test_oversigned_fields_pass(env):
    # h= names Subject twice (RFC 6376 8.15 over-signing): one Subject, all
    # instances signed -> pass; an unsigned field not in h= is no reason
    msg, marker = mxtest.make_message(sender="alice@dk.test", headers=["Keywords: a"])
    sig = sign(msg, env.keys["good"], headers=HDRS + [b"subject"])
    a = ar(deliver(env.strict, sig + b"Keywords: b\r\n" + msg, marker))
    assert "dkim=pass (2048-bit key) header.d=dk.test" in a, a


# ------------------------------------------------------------ kept as they were

def test_h_without_from_never_passes(env):
    # RFC 6376 5.4: From MUST be signed
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    sig = sign(msg, env.keys["good"], signer=NoFrom)
    assert b"from" not in sig.lower().split(b"h=")[1].split(b";")[0]
    a = ar(deliver(env.strict, sig + msg, marker))
    assert "dkim=" in a and "dkim=pass" not in a and "dmarc=pass" not in a, a


def test_key_flag_t_s_refuses_subdomain_identity(env):
    # RFC 6376 3.6.1 t=s: i= must not be a subdomain of d=
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    a = ar(deliver(env.strict, sign(msg, env.keys["good"], selector="strict",
                                    identity=b"@sub.dk.test") + msg, marker))
    assert "dkim=fail (" in a and "header.s=strict" in a, a
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    a = ar(deliver(env.strict, sign(msg, env.keys["good"], selector="strict") + msg, marker))
    assert "dkim=pass (2048-bit key) header.d=dk.test header.s=strict" in a, a


def test_signature_expiry_x(env):
    # RFC 6376 3.5 x=: a signature past its expiry never passes (an
    # hour ago, so no clock skew allowance can cover it); one expiring in
    # an hour passes
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    sig = sign(msg, env.keys["good"], signer=expiring(-7200, -3600))
    assert b"x=" in sig
    a = ar(deliver(env.strict, sig + msg, marker))
    assert "dkim=fail (signature expired) header.d=dk.test" in a, a
    assert "dkim=pass" not in a and "dmarc=pass" not in a, a
    msg, marker = mxtest.make_message(sender="alice@dk.test")
    sig = sign(msg, env.keys["good"], signer=expiring(0, 3600))
    a = ar(deliver(env.strict, sig + msg, marker))
    assert "dkim=pass (2048-bit key) header.d=dk.test" in a and "dmarc=pass" in a, a
