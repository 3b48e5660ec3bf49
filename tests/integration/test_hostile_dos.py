"""Hostile clients, part 4 - denial of service through the policy checks
(issue #11, items 10-12).  The real binary, a real DNS server (unbound,
dnsserver.py) with a zone that never answers, DKIM keys made at test time.

* Many DKIM signatures (item 10): attacker sessions send 1 MB header blocks
  with 6,500 DKIM-Signature fields.  libopendkim's signature parsing is not
  linear; it used to run on the event loop (inside dkim_eoh) and froze every
  session for seconds.  Now no library call on outside input runs on the
  loop and only dkim_max_signatures fields ever reach the library.
* Memory (item 11): sessions that send a max_header_size header block and
  then trickle the body hold about one copy of it, not ~30 (libopendkim's
  per-field copies, kept for the whole DATA phase, were the bulk).
* Slow zones (item 12): sessions whose SPF/DKIM/DMARC lookups all go to a
  zone that never answers hold at most [dns] slow_domain_limit workers; an
  honest message is judged at once and correctly.  A DMARC temperror (the
  _dmarc record timed out, or the aligned DKIM key did) answers 451: a spoof
  of a p=reject domain neither gets in nor gets a permanent 550.

The acceptance criterion of the issue is measured as a client sees it: the
wait for the 220 banner of a new connection, p99 < 20 ms while the attack
runs (100 samples, nearest rank: one outlier is tolerated).
"""

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

import dnsserver
import mxtest

RCPT = "user@example.test"
MB = 1024 * 1024
BANNER_P99 = mxtest.BANNER_P99


# ------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = tmp_path_factory.mktemp("dos")
    s = dnsserver.UnboundServer(d)
    s.key, txt = dnsserver.make_dkim_key(d, 2048, "honest")
    s.add("honest.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    s.add_txt("sel._domainkey.honest.test", txt)
    s.add("_dmarc.honest.test", "TXT", "v=DMARC1; p=reject")
    s.add("flood.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    # a p=reject domain whose DKIM keys never answer
    s.add("bank.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    s.add("_dmarc.bank.test", "TXT", "v=DMARC1; p=reject")
    s.blackhole("_domainkey.bank.test")
    # a domain whose DMARC record never answers
    s.add("slowbank.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    s.blackhole("_dmarc.slowbank.test")
    # the attackers' zone: nothing there ever answers
    s.blackhole("slow.test")
    s.start()
    yield s
    s.close()


def make_gateway(gateway, dns, limits=None, **auth):
    a = {"spf": "yes", "dkim": "yes", "dmarc": "yes"}
    a.update(auth)
    # the attackers reuse their sessions for as many 451s as they can get
    lim = {"max_connections_per_ip": "200", "max_connections": "400",
           "max_transactions": "1000000"}
    lim.update(limits or {})
    return gateway({"dns": {"forwarders": dns.forwarder, "timeout": "2s"},
                    "auth": a, "limits": lim}, dns=False)


# ------------------------------------------------------------ helpers

# banner_waits, p99 and BANNER_P99 are shared with the slow-scanner tests
# (test_scan_clamav.py, test_scan_rspamd.py): mxtest.py.
banner_waits = mxtest.banner_waits
p99 = mxtest.p99


class Attacker(threading.Thread):
    """One session sending data again and again (each waits for its reply,
    then pause seconds) until stopped; remembers the reply codes."""

    def __init__(self, gw, mail_from, data, pause=0.0):
        super().__init__(daemon=True)
        self.gw, self.mail_from, self.pause = gw, mail_from, pause
        self.data = mxtest.dot_stuff(data) + b".\r\n"
        self.stop = threading.Event()
        self.codes = []
        self.error = None

    def run(self):
        try:
            with self.gw.client(timeout=mxtest.scaled(120)) as c:
                c.ehlo("attacker.example.net")
                while not self.stop.is_set():
                    mxtest.assert_reply(c.cmd(f"MAIL FROM:<{self.mail_from}>"), 250)
                    mxtest.assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
                    mxtest.assert_reply(c.cmd("DATA"), 354)
                    c.send(self.data)
                    self.codes.append(c.reply().code)
                    self.stop.wait(self.pause)
        except Exception as e:   # reported by the test when not stopped
            self.error = e

    def finish(self, timeout):
        self.stop.set()
        self.join(timeout)


def signed_honest(dns, subject="honest"):
    msg, marker = mxtest.make_message(subject=subject, sender="alice@honest.test")
    return dnsserver.dkim_sign(msg, "sel", "honest.test", dns.key) + msg, marker


def ar(msg):
    vals = [v for v in mxtest.header_values(msg, "Authentication-Results")
            if v.split(";")[0].strip().lower() == "mx.example.test"]
    assert len(vals) == 1, vals
    return vals[0]


def assert_honest_verdicts(gw, marker):
    m = gw.wait_for_marker(marker)
    a = ar(m)
    assert "spf=pass" in a and "dkim=pass" in a and "dmarc=pass" in a, a
    assert mxtest.header_values(m, "X-Spam-Flag") == ["NO"], m[:2000]


def rss_kb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def fake_signature(i, domain="flood.test"):
    return (f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s{i};"
            f" h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;"
            f" b=QUFBQUFB{i:08d}\r\n").encode()


# ------------------------------------------------------------ item 10

def test_many_dkim_signatures_keep_the_loop_responsive(gateway, dns):
    gw = make_gateway(gateway, dns, limits={"max_header_size": "2M"})
    msg, _ = mxtest.make_message(subject="flood", sender="a@flood.test")
    sigs = b"".join(fake_signature(i) for i in range(6500))
    assert len(sigs) > MB
    # paced (0.2 s between messages): what is measured is the cost of the
    # signatures, not of the bandwidth (the old code froze the loop for
    # seconds on each of these messages)
    attackers = [Attacker(gw, "a@flood.test", sigs + msg, pause=0.2) for _ in range(3)]
    for a in attackers:
        a.start()
    try:
        # the attack is under way: each attacker had a message judged
        mxtest.wait_for(lambda: all(a.codes or a.error for a in attackers),
                        mxtest.scaled(60), what="a judged flood message per attacker")
        waits = banner_waits(gw)
        honest, marker = signed_honest(dns)
        gw.send("alice@honest.test", [RCPT], honest)
        alive = [a for a in attackers if a.is_alive()]
    finally:
        for a in attackers:
            a.finish(mxtest.scaled(60))
    assert not [a.error for a in attackers if a.error], [a.error for a in attackers]
    assert len(alive) == 3, "an attacker session ended during the measurement"
    print(f"banner wait p99 {p99(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms")
    assert p99(waits) < BANNER_P99, f"banner p99 {p99(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms"
    assert_honest_verdicts(gw, marker)
    # only dkim_max_signatures (5) were verified, the rest ignored and noted
    assert all(c == 250 for a in attackers for c in a.codes), [a.codes for a in attackers]
    flood = mxtest.wait_for(lambda: [m for m in gw.mailbox_messages() if b"Subject: flood" in m],
                            mxtest.scaled(15), what="a delivered flood message")[0]
    assert ar(flood).count("dkim=") == 5, ar(flood)
    assert re.search(r"dkim signatures=6500 ignored=6495", gw.log_text())


# ------------------------------------------------------------ item 11

def header_block(size, tag, field_size=16):
    """A header block of about size bytes: From/To/Subject, one DKIM
    signature and many fields of about field_size bytes (small ones:
    libopendkim copied each of them; big ones, folded: fewer than the 512
    fields ARC keeps, so its copy is the whole block)."""
    msg, marker = mxtest.make_message(subject=tag, sender="a@flood.test")
    head = msg.split(b"\r\n\r\n", 1)[0] + b"\r\n" + fake_signature(0)
    pad = []
    n = len(head) + 2
    i = 0
    fold = b"\r\n " + b"x" * 76
    while n + field_size < size:
        f = b"X-P%07d: ab" % i
        while len(f) + len(fold) + 2 <= field_size:
            f += fold
        f += b"\r\n"
        pad.append(f)
        n += len(f)
        i += 1
    return head + b"".join(pad) + b"\r\n", marker


@pytest.fixture
def small_quarantine(monkeypatch):
    """Under AddressSanitizer, cap the freed-memory quarantine so RSS
    measures what mxgate keeps (as in test_faults_resources.py)."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") +
                       "quarantine_size_mb=1:thread_local_quarantine_size_kb=64")


# The documented worst case (docs/security.md, "Memory in DATA"): per
# session in its body H without ARC (the DKIM worker's copy of the fields),
# 2H with [arc] on (ARC keeps its own copy until the seal); the verdict jobs
# add at most W x 2H (W = policy_workers = 4 here).  MARGIN (35%) covers the
# allocator's rounding and buffer slack (measured: +7% in the Release build)
# and, in the sanitizer build, ASan's shadow memory (+1/8 of what is
# touched) and redzones.  The ARC case uses ~2 KB fields, fewer than the 512
# ARC indexes (so its copy is the whole block, and the seal proves it) and
# fewer than DKIM's 1,000 (so libopendkim gets them all in the verdict job).
MEMORY_CASES = [
    # (name, [arc] section, header field size, copies of H per session)
    ("dkim", None, 16, 1),
    # fields libopendkim gets (fewer than 1,000): its copies must be gone
    # after each verdict job, not kept until the message is committed
    ("dkim-big-fields", None, 2200, 1),
    ("dkim+arc", {"enabled": "yes", "seal": "yes", "selector": "mem", "domain": "example.test",
                  "algorithm": "ed25519-sha256"}, 2200, 2),
]
MARGIN = 1.35
WORKERS = 4


@pytest.mark.parametrize("name,arc,field_size,copies", MEMORY_CASES,
                         ids=[c[0] for c in MEMORY_CASES])
def test_memory_per_session_bounded_by_max_header_size(small_quarantine, gateway, dns, tmp_path,
                                                       name, arc, field_size, copies):
    n = 30
    max_header = 1 * MB
    extra = {}
    if arc is not None:
        key = tmp_path / "arc.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", str(key)],
                       check=True, capture_output=True, timeout=60)
        extra["arc"] = dict(arc, key_file=str(key))
    gw = gateway({"dns": {"forwarders": dns.forwarder, "timeout": "2s"},
                  "auth": {"spf": "yes", "dkim": "yes", "dmarc": "yes"},
                  "limits": {"max_connections_per_ip": "200", "max_connections": "400",
                             "max_transactions": "1000000",
                             "max_header_size": str(max_header)},
                  **extra}, dns=False)
    warm, marker = signed_honest(dns, "warm-up")
    gw.send("alice@honest.test", [RCPT], warm)
    gw.wait_for_marker(marker)
    base_kb = rss_kb(gw.proc.pid)
    body_kb = base_kb + int(n * copies * max_header * MARGIN) // 1024
    bound_kb = body_kb + int(WORKERS * 2 * max_header * MARGIN) // 1024
    clients, markers = [], []
    try:
        for i in range(n):
            block, m = header_block(max_header - 64, f"mem{i}", field_size)
            markers.append(m)
            c = gw.client(timeout=mxtest.scaled(60))
            c.ehlo("trickle.example.net")
            mxtest.assert_reply(c.cmd("MAIL FROM:<a@flood.test>"), 250)
            mxtest.assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
            mxtest.assert_reply(c.cmd("DATA"), 354)
            c.send(block + b"the body starts, and then trickles\r\n")
            clients.append(c)
        # every session is in its body now, holding what it holds; the
        # daemon has read everything when a new client is served after it
        with gw.client() as probe:
            mxtest.assert_reply(probe.cmd("NOOP"), 250)
        time.sleep(0.5)
        peak_kb = rss_kb(gw.proc.pid, "VmHWM")
        now_kb = rss_kb(gw.proc.pid)
        print(f"{name}: RSS base {base_kb} kB, peak {peak_kb} kB, now {now_kb} kB, "
              f"bound {body_kb} kB ({n} x {copies} x H x {MARGIN})")
        assert peak_kb < body_kb, (f"peak RSS {peak_kb} kB (now {now_kb} kB) > base {base_kb} kB"
                                   f" + {n} x {copies} x max_header_size x {MARGIN} = {body_kb} kB")
        # then all of them end: the verdict jobs (libopendkim's own
        # copies, at most policy_workers at a time) stay within the bound
        for c in clients:
            c.send(b"last line\r\n.\r\n")
        for c in clients:
            mxtest.queued_id(c.reply())
        peak_kb = rss_kb(gw.proc.pid, "VmHWM")
        print(f"{name}: RSS peak after the verdicts {peak_kb} kB, bound {bound_kb} kB")
        assert peak_kb < bound_kb, f"peak RSS {peak_kb} kB after the verdicts > {bound_kb} kB"
        if field_size < 100:
            # libopendkim never got those tiny fields (over 1,000: not verified)
            assert re.search(r"dkim fields=\d+ msg=\"more than 1000 header fields",
                             gw.log_text())
        elif arc is not None:
            # ARC kept every field (fewer than its 512) and sealed them all:
            # its copy really was the whole block
            sealed = gw.wait_for_marker(markers[0])
            assert [v for v in mxtest.header_values(sealed, "ARC-Seal") if "s=mem" in v], \
                sealed[:1000]
    finally:
        for c in clients:
            c.close()
    honest, marker = signed_honest(dns)
    gw.send("alice@honest.test", [RCPT], honest)
    assert_honest_verdicts(gw, marker)


def test_many_fields_never_hide_an_added_header(gateway, dns):
    """More than 1,000 header fields: no signature is verified (dkim=policy).
    Dropping the top fields instead would hide a Subject added on top of an
    over-signed one (RFC 6376 8.15) and let the signature pass."""
    gw = make_gateway(gateway, dns)
    msg, marker = mxtest.make_message(subject="oversigned", sender="alice@honest.test")
    sig = dnsserver.dkim_sign(msg, "sel", "honest.test", dns.key,
                              headers=[b"from", b"to", b"subject", b"subject", b"date"])

    def forged(nfill):
        fill = b"".join(b"X-F%05d: x\r\n" % i for i in range(nfill))
        return b"Subject: forged " + marker.encode() + b"\r\n" + fill + sig + msg

    results = {}
    for nfill in (990, 1001):
        gw.send("alice@honest.test", [RCPT], forged(nfill))
    mxtest.wait_for(lambda: len(gw.find_in_mailbox(marker)) >= 2, mxtest.scaled(15),
                    what="both messages delivered")
    for m in gw.find_in_mailbox(marker):
        nf = len([1 for h in mxtest.parse_headers(m) if h[0].startswith("X-F")])
        results[nf] = ar(m)
    assert set(results) == {990, 1001}, results.keys()
    assert "dkim=fail" in results[990], results[990]       # libopendkim saw the added Subject
    assert "dkim=policy" in results[1001] and "dkim=pass" not in results[1001], results[1001]
    assert "more than 1000 header fields" in results[1001]


# ------------------------------------------------------------ item 12

def test_slow_zone_flood_isolated(gateway, dns):
    gw = make_gateway(gateway, dns)      # 4 workers, [dns] timeout 2s
    msg, _ = mxtest.make_message(subject="slow", sender="u@slow.test")
    data = fake_signature(1, "slow.test") + msg
    attackers = [Attacker(gw, f"u{i}@slow.test", data) for i in range(16)]
    for a in attackers:
        a.start()
    try:
        time.sleep(0.5)   # their SPF jobs hold the workers now
        t0 = time.monotonic()
        honest, marker = signed_honest(dns)
        # judged while the attack runs: at most slow_domain_limit (1) worker
        # waits on slow.test after its first timeout; the client waits no
        # longer than two DNS timeouts (before: 16 x several timeouts / 4)
        with gw.client(timeout=mxtest.scaled(6)) as c:
            c.ehlo("client.example.net")
            mxtest.queued_id(c.transaction("alice@honest.test", [RCPT], honest))
        honest_s = time.monotonic() - t0
        waits = banner_waits(gw)
        mxtest.wait_for(lambda: sum(len(a.codes) for a in attackers) >= 16,
                        mxtest.scaled(30), what="16 judged attacker messages")
    finally:
        for a in attackers:
            a.finish(mxtest.scaled(30))
    assert not [a.error for a in attackers if a.error], [a.error for a in attackers]
    print(f"banner wait p99 {p99(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms")
    assert p99(waits) < BANNER_P99, f"banner p99 {p99(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms"
    assert_honest_verdicts(gw, marker)
    # nothing from slow.test got in: DMARC temperror answers 451
    codes = [c for a in attackers for c in a.codes]
    assert codes and all(c == 451 for c in codes), codes
    assert not [m for m in gw.mailbox_messages() if b"Subject: slow" in m]
    assert "reason=slow" in gw.log_text()
    print(f"honest message judged in {honest_s:.2f} s")


def test_dmarc_record_timeout_is_451_not_accept(gateway, dns):
    """A p=reject domain whose _dmarc lookup times out: the spoof used to be
    queued with dmarc=temperror and X-Spam-Flag: NO."""
    gw = make_gateway(gateway, dns)
    msg, marker = mxtest.make_message(sender="ceo@slowbank.test")
    with gw.client() as c:
        c.ehlo("client.example.net")
        r = c.transaction("ceo@slowbank.test", [RCPT], msg, expect_queued=False)
    mxtest.assert_reply(r, 451, "4.7.1")
    assert "slowbank.test" in r.text
    assert not gw.find_in_mailbox(marker)


def test_aligned_dkim_key_timeout_is_451_not_550(gateway, dns, tmp_path):
    """p=reject, SPF fails, the aligned DKIM key lookup times out: the
    result is unknown (temperror), never a permanent 550."""
    gw = make_gateway(gateway, dns)
    key, _ = dnsserver.make_dkim_key(tmp_path, 1024, "bank")
    msg, marker = mxtest.make_message(sender="ceo@bank.test")
    msg = dnsserver.dkim_sign(msg, "k1", "bank.test", key) + msg
    with gw.client() as c:
        c.ehlo("client.example.net")
        r = c.transaction("ceo@bank.test", [RCPT], msg, expect_queued=False)
    mxtest.assert_reply(r, 451, "4.7.1")
    assert "bank.test" in r.text and "temporary" in r.text, r.text
    # dmarc_temperror = accept: stamped and queued instead
    gw2 = make_gateway(gateway, dns, dmarc_temperror="accept")
    gw2.send("ceo@bank.test", [RCPT], msg)
    a = ar(gw2.wait_for_marker(marker))
    assert "dkim=temperror" in a and "dmarc=temperror" in a and "spf=fail" in a, a
