"""STARTTLS on the receiving side (RFC 3207) with a CA made at test time:
verified handshake, TLS 1.2 and 1.3, TLS 1.1 refused, the Received header
records version and cipher, plaintext injection (CVE-2011-0411) is
discarded, the session is reset, real clients (swaks, smtplib)."""

import smtplib
import ssl
import subprocess
import uuid
import warnings

import pytest

from mxtest import (assert_reply, client_tls_context, header_values, make_message,
                    parse_received, queued_id, scaled)

SENDER = "sender@client.example.net"
RCPT = "user@example.test"
HELO = "client.example.net"


@pytest.fixture
def tls_gw(gateway, test_ca):
    return gateway(tls=test_ca)


def check_tls_received(gw, eml, qid, version, cipher, proto="ESMTPS", rcpt=RCPT):
    vals = header_values(eml, "Received")
    assert vals, "no Received header"
    rcv = parse_received(vals[0])
    assert rcv and rcv["by"] == gw.hostname, f"topmost Received is not ours: {vals[0]!r}"
    assert rcv["with_"] == proto, f"'with {proto}' expected: {vals[0]!r}"
    assert rcv["id"] == qid, vals[0]
    assert rcv["for_"] == f"<{rcpt}>", vals[0]
    assert "[127.0.0.1]" in (rcv["tcpinfo"] or ""), vals[0]
    assert version in vals[0], f"TLS version {version} not in Received: {vals[0]!r}"
    assert cipher in vals[0], f"cipher {cipher} not in Received: {vals[0]!r}"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_starttls_message(tls_gw, test_ca, version):
    gw = tls_gw
    ctx = client_tls_context(test_ca.ca_cert, min_version=version, max_version=version)
    msg, marker = make_message()
    with gw.client() as c:
        e = c.ehlo(HELO)
        assert "STARTTLS" in e.keywords, f"STARTTLS not advertised: {e}"
        r = c.starttls(ctx, gw.hostname)      # verifies chain and host name
        assert r.enh in (None, "2.0.0"), str(r)
        ver = c.sock.version()
        cipher = c.sock.cipher()[0]
        assert ver == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        e2 = c.ehlo(HELO)
        assert "STARTTLS" not in e2.keywords, f"STARTTLS advertised inside TLS: {e2}"
        assert "PIPELINING" in e2.keywords
        qid = queued_id(c.transaction(SENDER, [RCPT], msg))
        assert_reply(c.cmd("QUIT"), 221)
    eml = gw.wait_for_marker(marker)
    assert eml.endswith(msg)
    check_tls_received(gw, eml, qid, ver, cipher)


def test_tls11_client_refused(tls_gw, test_ca):
    gw = tls_gw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # that is the point
        ctx = client_tls_context(test_ca.ca_cert, min_version=ssl.TLSVersion.TLSv1_1,
                                 max_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with gw.client() as c:
        c.ehlo()
        r = c.cmd("STARTTLS")
        assert_reply(r, 220)
        with pytest.raises((ssl.SSLError, OSError)) as ei:
            c.tls_upgrade(ctx, gw.hostname)
        assert "NO_PROTOCOLS_AVAILABLE" not in str(ei.value).upper(), \
            f"the client could not offer TLS 1.1 at all: {ei.value}"
    # the daemon is fine afterwards
    with gw.client() as c:
        assert_reply(c.banner, 220)
        c.ehlo()
        c.starttls(client_tls_context(test_ca.ca_cert), gw.hostname)
        c.ehlo()


def test_starttls_injection_discarded(tls_gw, test_ca):
    """CVE-2011-0411: commands pipelined behind STARTTLS in the same write
    are plaintext an attacker could have inserted; they must be dropped."""
    gw = tls_gw
    ctx = client_tls_context(test_ca.ca_cert)
    with gw.client() as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.test>\r\n")
        r = c.reply()
        assert_reply(r, 220)
        c.tls_upgrade(ctx, gw.hostname)
        e = c.cmd(f"EHLO {HELO}")
        assert e.code == 250 and len(e.lines) > 1 and e.lines[0].split()[0] == gw.hostname, \
            f"first reply after TLS must be the EHLO reply, got: {e}"
        assert c.pending() == b"", "replies to injected commands"
        # the injected MAIL did not start a transaction
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 503)
        msg, marker = make_message()
        qid = queued_id(c.transaction(SENDER, [RCPT], msg))
    eml = gw.wait_for_marker(marker)
    rcv = parse_received(header_values(eml, "Received")[0])
    assert rcv["id"] == qid and rcv["with_"] == "ESMTPS"


def test_starttls_injection_single_packet_with_split_handshake(tls_gw, test_ca):
    """Same, with a NOOP glued to STARTTLS and the reply read byte by byte."""
    gw = tls_gw
    with gw.client() as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nNOOP\r\nNOOP\r\n")
        assert_reply(c.reply(), 220)
        c.tls_upgrade(client_tls_context(test_ca.ca_cert), gw.hostname)
        assert_reply(c.cmd("NOOP"), 250)
        assert c.pending() == b"", "replies to injected NOOPs"


def test_starttls_resets_session(tls_gw, test_ca):
    gw = tls_gw
    ctx = client_tls_context(test_ca.ca_cert)
    with gw.client() as c:
        c.ehlo()
        c.starttls(ctx, gw.hostname)
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 503)   # RFC 3207 4.2: EHLO again
        c.ehlo()
        r = c.cmd("STARTTLS")
        assert str(r.code)[0] == "5", f"STARTTLS inside TLS: {r}"
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)


def test_starttls_with_argument_and_before_ehlo(tls_gw, test_ca):
    gw = tls_gw
    with gw.client() as c:
        c.ehlo()
        assert_reply(c.cmd("STARTTLS now"), 501)
        c.starttls(client_tls_context(test_ca.ca_cert), gw.hostname)
        assert_reply(c.cmd("NOOP"), 250)


def test_smtputf8_over_tls(tls_gw, test_ca):
    gw = tls_gw
    msg, marker = make_message(subject="Grüße")
    with gw.client() as c:
        c.ehlo()
        c.starttls(client_tls_context(test_ca.ca_cert), gw.hostname)
        c.ehlo()
        ver, cipher = c.sock.version(), c.sock.cipher()[0]
        assert_reply(c.cmd("MAIL FROM:<jörg@client.example.net> SMTPUTF8"), 250)
        assert_reply(c.cmd("RCPT TO:<üser@example.test>"), 250)
        assert_reply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        qid = queued_id(c.reply())
    eml = gw.wait_for_marker(marker)
    check_tls_received(gw, eml, qid, ver, cipher, proto="UTF8SMTPS", rcpt="üser@example.test")


def swaks_has_tls():
    p = subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"], capture_output=True, timeout=30)
    return p.returncode == 0


def test_swaks_starttls_verified(tls_gw, test_ca):
    if not swaks_has_tls():
        pytest.skip("swaks needs Net::SSLeay for --tls: Debian package libnet-ssleay-perl"
                    " is not installed (add it to DEB_TEST in the Makefile)")
    gw = tls_gw
    marker = "swakstls" + uuid.uuid4().hex
    p = subprocess.run(["swaks", "--server", f"127.0.0.1:{gw.port}", "--ehlo", HELO,
                        "--from", SENDER, "--to", RCPT, "--tls", "--tls-verify",
                        "--tls-ca-path", test_ca.ca_cert, "--tls-sni", gw.hostname,
                        "--header", f"Subject: {marker}", "--body", "via swaks",
                        "--timeout", "20"],
                       capture_output=True, text=True, timeout=scaled(60))
    assert p.returncode == 0, f"swaks failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    eml = gw.wait_for_marker(marker)
    rcv = parse_received(header_values(eml, "Received")[0])
    assert rcv["with_"] == "ESMTPS"


def test_smtplib_starttls(tls_gw, test_ca):
    gw = tls_gw
    msg, marker = make_message()
    with smtplib.SMTP("127.0.0.1", gw.port, local_hostname=HELO, timeout=scaled(10)) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        # the certificate names IP:127.0.0.1 too, so smtplib's check of the
        # host it connected to succeeds
        code, _ = s.starttls(context=client_tls_context(test_ca.ca_cert))
        assert code == 220
        s.ehlo()
        assert not s.has_extn("starttls")
        refused = s.sendmail(SENDER, [RCPT], msg)
        assert refused == {}
    eml = gw.wait_for_marker(marker)
    rcv = parse_received(header_values(eml, "Received")[0])
    assert rcv["with_"] == "ESMTPS"
