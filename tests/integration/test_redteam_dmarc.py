"""Red team (issue 12, DMARC): records and From: values an attacker would
use to get a p=reject domain's policy ignored.  Each case spoofs a p=reject
domain (SPF fails, no DKIM): the right answer is always 550.

Real unbound on loopback (dnsserver.py), the real binary; the transaction
helper is test_dmarc_rfc9989.py's."""

import pytest

import dnsserver
import mxtest
from test_dmarc_rfc9989 import run

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
