"""Hostile clients, part 3 - protocol tricks (issue 6).

Every SMTP-smuggling end-of-data variant relayed through a real SMTP
downstream (tests/integration/downstream.py): nothing is ever split into two
messages there, and what is relayed has no bare CR/LF a lenient downstream
could mistake for an end of data.  STARTTLS with commands pipelined behind
it and plaintext slipped in before the handshake; TLS handshake garbage;
TLS spoken to the plaintext port."""

import os
import socket
import ssl
import time

import pytest

from downstream import Downstream, relay_extra
from mxtest import (RawClient, assert_reply, client_tls_context, dot_stuff, make_message,
                    queued_id, scaled, wait_for)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"

FAKE_ENDS = {
    "bare-lf": b"\nfake line\n",
    "bare-cr": b"\rfake line\r",
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "crlf-dot-cr-crlf": b"\r\n.\r\r\n",
    "crlf-nul-dot-crlf": b"\r\n\x00.\r\n",
    "crlf-dot-nul-crlf": b"\r\n.\x00\r\n",
    "lf-nul-dot-lf": b"\n\x00.\n",
    "crlf-dot-space-crlf": b"\r\n. \r\n",
}

# fake ends a lenient downstream might honour inside relayed data
LENIENT_ENDS = [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\n.\r", b"\x00"]


def assert_still_serves(gw):
    msg, marker = make_message(subject="after-abuse")
    gw.send(SENDER, [RCPT], msg)
    return marker


def test_smuggling_variants_never_split_downstream(gateway):
    """Each fake end of data carries a smuggled second transaction.  Every
    carrier is refused at the real end; the downstream receives exactly the
    good messages sent in between - whole, one DATA each - and their bytes
    hold no sequence a lenient parser would take for an end of data."""
    with Downstream() as ds:
        gw = gateway(relay_extra([f"127.0.0.1:{ds.port}"]))
        good_markers = []
        whole = []
        with gw.client() as c:
            c.ehlo()
            for name, fake in FAKE_ENDS.items():
                carrier, cm = make_message(subject=f"carrier-{name}", body="")
                smuggled, sm = make_message(subject=f"SMUGGLED-{name}",
                                            sender="ceo@example.test")
                payload = (carrier + b"line1" + fake
                           + b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.test>\r\n"
                             b"DATA\r\n" + smuggled + b".\r\n")
                assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
                assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
                assert_reply(c.cmd("DATA"), 354)
                c.send(payload)
                r = c.reply()
                if name == "crlf-dot-space-crlf":
                    # ". " is a legal line (unstuffed to " "): one message,
                    # smuggled text and all, ending at the real end
                    queued_id(r)
                    whole.append(cm)
                else:
                    assert str(r.code)[0] == "5", f"{name}: carrier accepted: {r}"
                assert c.pending(scaled(0.2)) == b"", f"{name}: replies to smuggled commands"
                # a good message with every legal dot trick in between
                body = ".\r\n..\r\n. \r\n.x\r\nend.\r\n.\r\n"
                good, gm = make_message(subject=f"good-{name}", body=body)
                queued_id(c.transaction(SENDER, [RCPT], good))
                good_markers.append((gm, good))
            assert_reply(c.cmd("QUIT"), 221)
        n = len(good_markers) + len(whole)
        msgs = ds.wait_messages(n, scaled(30))
        time.sleep(0.5)
        msgs = list(ds.messages)
        assert len(msgs) == n, f"{len(msgs)} messages downstream for {n} accepted"
        for cm in whole:
            got = ds.find(cm)
            assert len(got) == 1 and b"SMUGGLED" in got[0].data, "carrier split or cut"
            msgs = [m for m in msgs if m is not got[0]]
        for gm, good in good_markers:
            got = ds.find(gm)
            assert len(got) == 1, f"{gm}: {len(got)} copies downstream"
            assert got[0].data.endswith(good), f"{gm}: relayed message differs"
            assert got[0].rcpt_tos == [RCPT]
        for m in msgs:
            assert b"SMUGGLED" not in m.data and b"carrier-" not in m.data
            wire = dot_stuff(m.data)      # as it went over the wire
            for seq in LENIENT_ENDS:
                assert seq not in wire, f"{seq!r} relayed downstream"
            stripped = m.data.replace(b"\r\n", b"")
            assert b"\r" not in stripped and b"\n" not in stripped, "bare CR/LF relayed"
        assert "victim@example.test" not in ds.rcpts_delivered()
        wait_for(lambda: not gw.queue_ids(), scaled(10), what="queue empty")


# ---------------------------------------------------------------- STARTTLS abuse

@pytest.fixture
def tls_gw(gateway, test_ca):
    return gateway({"limits": {"command_timeout": "3s"}}, tls=test_ca)


def test_starttls_pipelined_transaction_discarded(tls_gw, test_ca):
    """A whole transaction pipelined behind STARTTLS in one write is
    plaintext anyone on the path could have inserted: none of it runs, the
    TLS session starts from scratch (EHLO needed), nothing is delivered."""
    gw = tls_gw
    smuggled, sm = make_message(subject="SMUGGLED")
    with gw.client() as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<ceo@example.test>\r\n"
               b"RCPT TO:<victim@example.test>\r\nDATA\r\n" + smuggled + b".\r\nQUIT\r\n")
        assert_reply(c.reply(), 220)
        c.tls_upgrade(client_tls_context(test_ca.ca_cert), gw.hostname)
        r = c.cmd("NOOP")          # the first reply in TLS must be this one's
        assert str(r) == "250 2.0.0 Ok", f"replies to the pipelined commands: {r}"
        assert c.pending(0.5) == b"", "replies to the commands pipelined after STARTTLS"
        assert_reply(c.cmd("MAIL FROM:<a@example.net>"), 503)     # HELO forgotten
        c.ehlo()
        assert_reply(c.cmd("STARTTLS"), 503)                       # not twice
        msg, marker = make_message()
        queued_id(c.transaction(SENDER, [RCPT], msg))
    gw.wait_for_marker(marker)
    assert not gw.find_in_mailbox(sm)
    assert len(gw.mailbox_files()) == 1


def test_plaintext_after_220_before_handshake(tls_gw, test_ca):
    """Plaintext sent after the 220 but before the ClientHello is not a
    command: it is fed to the TLS layer and kills the handshake."""
    gw = tls_gw
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("STARTTLS"), 220)
        c.send(b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.test>\r\n")
        with pytest.raises((ssl.SSLError, OSError, AssertionError)):
            c.tls_upgrade(client_tls_context(test_ca.ca_cert), gw.hostname)
            c.cmd("NOOP")
    assert not gw.queue_ids()
    gw.wait_for_marker(assert_still_serves(gw))


GARBAGE = {
    "random": os.urandom(4096),
    "http": b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n",
    "sslv2-hello": bytes.fromhex("802b0103000012000000100700c0030080010080060040040080020080"),
    "zero-length-records": b"\x16\x03\x01\x00\x00" * 200,
    "huge-record-length": b"\x16\x03\x01\xff\xff" + b"A" * 1000,
    "alert": b"\x15\x03\x03\x00\x02\x02\x28",
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_tls_handshake_garbage(tls_gw, name):
    gw = tls_gw
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("STARTTLS"), 220)
        try:
            c.send(GARBAGE[name])
        except OSError:
            pass
        rest = c.wait_closed(scaled(8))      # closed: by the TLS error or the timeout
        assert not rest.startswith(b"250"), rest
    gw.wait_for_marker(assert_still_serves(gw))


def client_hello(ca, hostname):
    """The bytes of a real TLS ClientHello (Python's ssl, memory BIOs)."""
    ctx = client_tls_context(ca.ca_cert)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_truncated_client_hello_then_silence(tls_gw, test_ca):
    """Half a ClientHello, then nothing: the handshake times out and the
    session is closed (no reply: the channel is neither plain nor TLS)."""
    gw = tls_gw
    hello = client_hello(test_ca, gw.hostname)   # a real one, sent cut in half
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("STARTTLS"), 220)
        c.send(hello[:len(hello) // 2])
        t0 = time.monotonic()
        assert c.wait_closed(scaled(15)) == b""
        assert time.monotonic() - t0 >= 2.0
    gw.wait_for_marker(assert_still_serves(gw))


def test_dribbled_client_hello_hits_handshake_deadline(tls_gw, test_ca):
    """A ClientHello sent one byte every 0.5 s: raw bytes keep arriving
    faster than the 3 s timeout, yet the whole handshake must still end
    within command_timeout of the 220 (the timeout counts completed TLS
    reads, not raw bytes)."""
    gw = tls_gw
    hello = client_hello(test_ca, gw.hostname)
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("STARTTLS"), 220)
        t0 = time.monotonic()
        closed = False
        for i in range(min(len(hello) - 1, 40)):
            try:
                c.send(hello[i:i + 1])
            except OSError:
                closed = True
                break
            if c.is_closed(wait=0.5):
                closed = True
                break
        took = time.monotonic() - t0
        assert closed or c.wait_closed(scaled(3)) == b"", "dribbled handshake never cut"
        assert took < scaled(3) + 3.0, f"handshake cut only after {took:.1f}s"
    gw.wait_for_marker(assert_still_serves(gw))


def test_tls_to_plaintext_port(tls_gw, test_ca):
    """An implicit-TLS client (port 465 habits) on the SMTP port: its
    ClientHello is not a command line; mxgate answers 500s and closes
    within max_errors, and serves on."""
    gw = tls_gw
    with RawClient(gw.port) as c:
        c.send(client_hello(test_ca, gw.hostname) + b"\r\n" * 20)
        rest = c.wait_closed(scaled(8))
        for line in rest.split(b"\r\n"):
            assert line == b"" or line[:1] in (b"4", b"5"), rest
    gw.wait_for_marker(assert_still_serves(gw))


def test_client_resets_during_handshake(tls_gw, test_ca):
    gw = tls_gw
    for _ in range(20):
        c = gw.client()
        c.ehlo()
        assert_reply(c.cmd("STARTTLS"), 220)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    gw.wait_for_marker(assert_still_serves(gw))
