"""Who may talk to mxgate: CIDR deny/allow, PROXY v1/v2 from trusted load
balancers (real client address in Received; denied addresses inside the
header refused; untrusted or malformed PROXY closed), per-IP connection
limits.  Client sockets are bound to other 127/8 addresses to play
different clients."""

import struct

import pytest

from mxtest import (PROXY_V2_SIG, RawClient, assert_reply, header_values, make_message,
                    parse_received, proxy_v1, proxy_v2, ptr_name, queued_id, scaled, wait_for)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
HELO = "client.example.net"


def assert_refused_at_connect(gw, source):
    with gw.client(source=source) as c:
        assert_reply(c.banner, 554)
        c.wait_closed(scaled(5))


# ---------------------------------------------------------------- CIDR lists

def test_denied_cidr_gets_554_and_close(gateway):
    gw = gateway({"access": {"deny": "127.0.0.2/32"}})
    assert_refused_at_connect(gw, "127.0.0.2")
    with gw.client(source="127.0.0.3") as c:
        assert_reply(c.banner, 220)
    with gw.client() as c:
        assert_reply(c.banner, 220)
        c.ehlo()


def test_allow_list_and_deny_wins(gateway):
    gw = gateway({"access": {"allow": "127.0.0.1/32, 127.0.0.4/31",
                             "deny": "127.0.0.5/32"}})
    with gw.client() as c:
        assert_reply(c.banner, 220)
    with gw.client(source="127.0.0.4") as c:
        assert_reply(c.banner, 220)
    assert_refused_at_connect(gw, "127.0.0.5")    # allowed by /31, denied: deny wins
    assert_refused_at_connect(gw, "127.0.0.6")    # not on the allow list


# ---------------------------------------------------------------- PROXY protocol

TRUSTED = {"access": {"trusted_proxies": "127.0.0.1/32", "deny": "192.0.2.0/24"},
           "limits": {"proxy_timeout": "2s"}}


def proxied_message(gw, header, split=False):
    msg, marker = make_message()
    with gw.client(banner=False) as c:
        if split:
            c.send_split(header, chunk=5, delay=0.01)
        else:
            c.send(header)
        assert_reply(c.reply(), 220)
        c.ehlo(HELO)
        qid = queued_id(c.transaction(SENDER, [RCPT], msg))
        assert_reply(c.cmd("QUIT"), 221)
    eml = gw.wait_for_marker(marker)
    raw = header_values(eml, "Received")[0]
    rcv = parse_received(raw)
    assert rcv and rcv["by"] == gw.hostname and rcv["id"] == qid, raw
    return rcv, raw


def test_proxy_v1_sets_client_address(gateway):
    gw = gateway(TRUSTED)
    gw.dns.add(ptr_name("198.51.100.7"), "PTR", "client.example.net.")
    gw.dns.add("client.example.net", "A", "198.51.100.7")
    rcv, raw = proxied_message(gw, proxy_v1("198.51.100.7", "127.0.0.1", 40001, 25))
    assert "[198.51.100.7]" in (rcv["tcpinfo"] or ""), f"client address from PROXY: {raw!r}"
    assert "client.example.net" in rcv["tcpinfo"], f"rDNS of the PROXY address: {raw!r}"
    assert "127.0.0.1" not in raw.split(" by ")[0], raw


def test_proxy_v1_ipv6_and_split_header(gateway):
    gw = gateway(TRUSTED)
    rcv, raw = proxied_message(gw, proxy_v1("2001:db8::7", "::1", 40002, 25), split=True)
    assert "[IPv6:2001:db8::7]" in (rcv["tcpinfo"] or ""), raw


def test_proxy_v2_sets_client_address(gateway):
    gw = gateway(TRUSTED)
    rcv, raw = proxied_message(gw, proxy_v2("198.51.100.8", "127.0.0.1", 40003, 25))
    assert "[198.51.100.8]" in (rcv["tcpinfo"] or ""), raw
    # with a TLV (AWS NLB sends PP2_TYPE_AWS 0xEA) and split into small packets
    tlv = b"\xea" + struct.pack("!H", 17) + b"\x01vpce-0123456789a"
    rcv, raw = proxied_message(gw, proxy_v2("2001:db8::8", "::1", 40004, 25, tlvs=tlv),
                               split=True)
    assert "[IPv6:2001:db8::8]" in (rcv["tcpinfo"] or ""), raw


def test_proxy_local_and_unknown_use_peer_address(gateway):
    gw = gateway(TRUSTED)
    for hdr in (proxy_v2("0.0.0.0", "0.0.0.0", command="LOCAL"), b"PROXY UNKNOWN\r\n"):
        rcv, raw = proxied_message(gw, hdr)
        assert "[127.0.0.1]" in (rcv["tcpinfo"] or ""), raw


@pytest.mark.parametrize("hdr", [proxy_v1("192.0.2.9", "127.0.0.1"),
                                 proxy_v2("192.0.2.10", "127.0.0.1")], ids=["v1", "v2"])
def test_proxy_denied_address_refused(gateway, hdr):
    gw = gateway(TRUSTED)
    with gw.client(banner=False) as c:
        c.send(hdr)
        assert_reply(c.reply(), 554)
        c.wait_closed(scaled(5))


@pytest.mark.parametrize("hdr", [proxy_v1("198.51.100.7", "127.0.0.1"),
                                 proxy_v2("198.51.100.7", "127.0.0.1")], ids=["v1", "v2"])
def test_proxy_from_untrusted_peer_closed(gateway, hdr):
    gw = gateway(TRUSTED)
    with gw.client(source="127.0.0.3", banner=False) as c:
        c.send(hdr + f"EHLO {HELO}\r\n".encode())
        got = c.wait_closed(scaled(5))
        for line in got.split(b"\r\n"):
            assert not line.startswith(b"250"), f"untrusted PROXY accepted: {got!r}"


MALFORMED = {
    "v1-bad-address": b"PROXY TCP4 999.1.1.1 127.0.0.1 40000 25\r\n",
    "v1-bad-port": b"PROXY TCP4 198.51.100.7 127.0.0.1 99999 25\r\n",
    "v1-family-mismatch": b"PROXY TCP4 2001:db8::1 127.0.0.1 40000 25\r\n",
    "v1-garbage": b"PROXY GARBAGE\r\n",
    "v1-too-long": b"PROXY TCP4 " + b"1" * 200 + b"\r\n",
    "v1-bare-lf": b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\n",
    "v2-bad-version": PROXY_V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12,
    "v2-short-address": PROXY_V2_SIG + b"\x21\x11\x00\x04" + b"\xc6\x33\x64\x07",
    "v2-huge-length": PROXY_V2_SIG + b"\x21\x11\xff\xff" + b"\x00" * 64,
    "no-proxy-header": b"EHLO client.example.net\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_proxy_closed(gateway, name):
    gw = gateway(TRUSTED)
    with gw.client(banner=False) as c:
        c.send(MALFORMED[name])
        got = c.wait_closed(scaled(5))
        assert not got.startswith(b"220"), f"{name}: greeted after a malformed PROXY: {got!r}"
    with gw.client(banner=False) as c:    # the daemon is fine
        c.send(proxy_v1("198.51.100.7", "127.0.0.1"))
        assert_reply(c.reply(), 220)


def test_proxy_timeout(gateway):
    gw = gateway(TRUSTED)
    with gw.client(banner=False) as c:
        got = c.wait_closed(scaled(8))    # proxy_timeout = 2s
        assert not got.startswith(b"220"), got


# ---------------------------------------------------------------- connection limits

def test_max_connections_per_ip(gateway):
    gw = gateway({"limits": {"max_connections_per_ip": 2}})
    c1 = gw.client()
    c2 = gw.client()
    try:
        assert_reply(c1.banner, 220)
        assert_reply(c2.banner, 220)
        with gw.client() as c3:
            assert_reply(c3.banner, 421, "4.7.0")
            c3.wait_closed(scaled(5))
        with gw.client(source="127.0.0.5") as c5:
            assert_reply(c5.banner, 220)
            c5.ehlo()
            assert_reply(c5.cmd("NOOP"), 250)
        # the first two sessions are untouched
        assert_reply(c1.cmd("NOOP"), 250)
        assert_reply(c2.cmd("NOOP"), 250)
        assert_reply(c1.cmd("QUIT"), 221)
        c1.wait_closed(scaled(5))

        def slot_free():
            c = RawClient(gw.port)
            if c.banner.code == 220:
                return c
            c.close()
            return None
        c4 = wait_for(slot_free, scaled(5), what="a free slot after one client quit")
        c4.close()
    finally:
        c1.close()
        c2.close()
