"""Red team (issue 12, ARC): forged trust through the trusted-forwarder
override.  Uses test_arc.py's environment (real unbound on loopback, dkimpy
as the independent sealer, a gateway trusting lists.test as a sealer)."""

import pytest

import mxtest
from test_arc import LIST_BOUNCE, deliver, dkim, dnsfunc, env, refuse, sealed  # noqa: F401


def _second_hop(env, first, dmarc):
    """lists.test (trusted) forwards `first` honestly: its own A-R records
    what it saw (dmarc=`dmarc` for drej.test), then its ARC set, i=2."""
    hdr_end = first.index(b"\r\n\r\n") + 2
    prior, body = first[:hdr_end], first[hdr_end + 2:]
    arh = (b"Authentication-Results: lists.test; arc=pass;\r\n"
           b"\tdmarc=" + dmarc.encode() + b" header.from=drej.test\r\n")
    full = arh + prior + b"\r\n" + body
    arc2 = dkim.arc_sign(full, b"fwd", b"lists.test", env.fwd_key, b"lists.test",
                         include_headers=[b"from", b"to", b"subject", b"date",
                                          b"message-id"])
    assert len(arc2) == 3
    return b"".join(arc2) + full


def test_override_ignores_an_untrusted_first_hop_claiming_dmarc_pass(env):
    """The attacker seals i=1 with its own key (evil.test, not trusted) and
    writes "dmarc=pass header.from=drej.test" into that ARC-A-R; then it
    posts the message through the trusted list, which honestly judges
    dmarc=fail and seals i=2 (cv=pass: the attacker's seal is valid).  The
    chain validates and the newest sealer is trusted, but the dmarc=pass
    came from the untrusted i=1: the override must not apply (p=reject ->
    550).  Only the ARC-A-R of a trusted sealer may be believed."""
    first, marker = sealed(env.evil_key, "evil.test", "evil", sender="alice@drej.test",
                           dmarc="pass")
    fwd = _second_hop(env, first, "fail")
    assert dkim.arc_verify(fwd, dnsfunc=dnsfunc(env))[0] == dkim.CV_Pass
    r = refuse(env.gw, LIST_BOUNCE, fwd)
    mxtest.assert_reply(r, 550, "5.7.1")


def test_override_trusts_the_trusted_hops_own_dmarc_pass(env):
    """The honest case next to the attack: i=1 by an untrusted hop that said
    dmarc=fail, i=2 by the trusted list that itself recorded dmarc=pass
    (e.g. it verified the original DKIM signature): the trusted sealer's
    word is what the override stands on, so the message is delivered."""
    first, marker = sealed(env.evil_key, "evil.test", "evil", sender="alice@drej.test",
                           dmarc="fail")
    fwd = _second_hop(env, first, "pass")
    m = deliver(env.gw, LIST_BOUNCE, fwd, marker)
    a = [v for v in mxtest.header_values(m, "Authentication-Results")
         if v.split(";")[0].strip().lower() == "mx.example.test"][0]
    assert "override=arc trusted sealer lists.test" in " ".join(a.split()), a


def test_forged_trusted_seal_with_impossible_selector_is_not_deferred(env):
    """An attacker seals with its own key but writes d=lists.test (trusted)
    and a selector with a 70-octet label into the ARC-Seal and AMS.  The
    key name is no DNS name: that is the seal's own error (chain fails, the
    DMARC reject stands, 550), not the temporary key failure of a trusted
    forwarder that earns a 451 retry."""
    fwd, _ = sealed(env.evil_key, "evil.test", "evil", sender="alice@drej.test")
    bad = b"s" * 70
    fwd = fwd.replace(b"d=evil.test", b"d=lists.test").replace(b"s=evil;", b"s=" + bad + b";")
    assert fwd.count(b"s=" + bad) == 2, fwd[:600]
    r = refuse(env.gw, LIST_BOUNCE, fwd)
    mxtest.assert_reply(r, 550, "5.7.1")


def test_quoted_semicolon_in_trusted_aar_is_not_a_dmarc_pass(env):
    """The trusted list records the attacker's envelope sender as it came:
    smtp.mailfrom="x;dmarc=pass "@evil.test (a valid quoted local part), and
    its own verdict dmarc=fail.  Splitting the ARC-A-R on every ';' found a
    clause "dmarc=pass ..." inside the quoted string: the override must
    read only real resinfo clauses (RFC 8601 quoted-string), so 550."""
    msg, marker = mxtest.make_message(sender="alice@drej.test")
    arh = (b'Authentication-Results: lists.test; spf=pass '
           b'smtp.mailfrom="x;dmarc=pass "@evil.test;\r\n'
           b'\tdmarc=fail header.from=drej.test\r\n')
    full = arh + msg
    arc_set = dkim.arc_sign(full, b"fwd", b"lists.test", env.fwd_key, b"lists.test",
                            include_headers=[b"from", b"to", b"subject", b"date",
                                             b"message-id"])
    assert len(arc_set) == 3, arc_set
    fwd = b"".join(arc_set) + full
    assert b'dmarc=pass "@evil.test' in b"".join(arc_set), arc_set
    r = refuse(env.gw, LIST_BOUNCE, fwd)
    mxtest.assert_reply(r, 550, "5.7.1")
