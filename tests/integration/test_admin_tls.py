"""The report dashboard over HTTPS (issue 15, [admin] tls), black-box: the
real mxgate with the test CA's certificate in [tls], a DMARC report mailed
to it over SMTP, then the dashboard's API read with Python's ssl module.

Covered: the API answers over HTTPS (TLS 1.2 and 1.3, the certificate
verified against the test CA) with the bearer token and refuses without
it or with a wrong one; every answer carries Strict-Transport-Security;
TLS 1.1 and plain HTTP on the HTTPS port get nothing; a reload re-reads a
renewed certificate (new connections see it).  tls = auto on loopback
stays plain HTTP without HSTS.  check-config: plain HTTP on an address
that is not loopback (tls = no), or HTTPS without a certificate, is an
error at FILE:LINE of the listener (or of tls = yes); allow_plain_http =
yes lets tls = no through; auto with a certificate is fine.  A client
that drips its handshake or request a byte at a time (each byte restarts
evhttp's per-read timeout) is cut off 10 s after the accept, and no more
than ADMIN_MAX_CONNS (128) connections are open at once, plain HTTP and
HTTPS alike (the connection guard, gw-httpguard.c).
"""

import http.client
import json
import shutil
import socket
import ssl
import time
from email.message import EmailMessage

import pytest

import mxtest
from test_check_config import base_lines, check, diags, line_no, write_conf

TOKEN = "s3cret-dashboard-token-0123456789"

AGG = """<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata><org_name>tls-test.example</org_name>
    <email>noreply@tls-test.example</email><report_id>tls-1</report_id>
    <date_range><begin>1700000000</begin><end>1700086399</end></date_range>
  </report_metadata>
  <policy_published><domain>example.test</domain><p>none</p></policy_published>
  <record>
    <row><source_ip>198.51.100.77</source_ip><count>12</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>
      </policy_evaluated></row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><dkim><domain>example.test</domain><result>pass</result></dkim>
      <spf><domain>example.test</domain><result>pass</result></spf></auth_results>
  </record>
</feedback>
"""


def report_mail():
    m = EmailMessage()
    m["From"] = "noreply@tls-test.example"
    m["To"] = "dmarc-reports@example.test"
    m["Subject"] = "Report domain: example.test"
    m["Message-ID"] = "<tls-1@tls-test.example>"
    m.set_content("report attached")
    m.add_attachment(AGG.encode(), maintype="text", subtype="xml", filename="r.xml")
    return m.as_bytes().replace(b"\n", b"\r\n")


def https_get(port, path, token, ctx):
    """(status, headers, body) of GET path over HTTPS."""
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx,
                                    timeout=mxtest.scaled(10))
    try:
        h = {"Authorization": "Bearer " + token} if token is not None else {}
        c.request("GET", path, headers=h)
        r = c.getresponse()
        return r.status, r.headers, r.read().decode()
    finally:
        c.close()


def peer_cert(port, ca):
    ctx = mxtest.client_tls_context(ca.ca_cert)
    with socket.create_connection(("127.0.0.1", port), timeout=mxtest.scaled(10)) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            return t.getpeercert(binary_form=True)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_dashboard_over_https(tmp_path):
    ca = mxtest.make_test_ca(tmp_path)
    aport = mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"reports": {"ingest": "yes"},
                                          "admin": {"listen": f"127.0.0.1:{aport}",
                                                    "tls": "yes", "token": TOKEN}},
                        tls=ca)
    gw.start()
    try:
        gw.wait_log(r"admin dashboard listening on https://127\.0\.0\.1:%d" % aport,
                    mxtest.scaled(10))
        assert gw.send("noreply@tls-test.example", ["dmarc-reports@example.test"],
                       report_mail())
        ctx = mxtest.client_tls_context(ca.ca_cert)   # verifies the chain and 127.0.0.1

        def stored():
            code, _, body = https_get(aport, "/api/sources?days=3650", TOKEN, ctx)
            return code == 200 and "198.51.100.77" in body and json.loads(body)
        rows = mxtest.wait_for(stored, mxtest.scaled(20), what="the report over HTTPS")
        assert [r["count"] for r in rows if r["source_ip"] == "198.51.100.77"] == [12]

        # the token is still required; every answer says HTTPS only (HSTS)
        for tok in (None, "wrong", TOKEN[:-1] + "X"):
            code, hdrs, _ = https_get(aport, "/api/sources", tok, ctx)
            assert code == 401
            assert hdrs["Strict-Transport-Security"] == "max-age=31536000"
        code, hdrs, body = https_get(aport, "/", None, ctx)
        assert code == 200 and "<html" in body
        assert hdrs["Strict-Transport-Security"] == "max-age=31536000"

        # TLS 1.2 and 1.3 work; TLS 1.1 is refused by the server
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            c = mxtest.client_tls_context(ca.ca_cert, min_version=v, max_version=v)
            assert https_get(aport, "/api/info", TOKEN, c)[0] == 200
        old = mxtest.client_tls_context(ca.ca_cert, min_version=ssl.TLSVersion.TLSv1,
                                        max_version=ssl.TLSVersion.TLSv1_1)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")   # let the client offer TLS 1.1
        with pytest.raises(ssl.SSLError) as e:
            https_get(aport, "/api/info", TOKEN, old)
        assert "PROTOCOL_VERSION" in str(e.value).upper(), e.value  # the server's alert

        # plain HTTP on the HTTPS port gets no HTTP answer at all
        with socket.create_connection(("127.0.0.1", aport), timeout=mxtest.scaled(10)) as s:
            s.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + TOKEN.encode() + b"\r\n\r\n")
            got = b""
            try:
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    got += b
            except (ConnectionResetError, socket.timeout):
                pass
            assert b"HTTP/1." not in got and b"mta_sts_mode" not in got

        # a renewed certificate is served after a reload
        before = peer_cert(aport, ca)
        renewed = mxtest.make_test_ca(tmp_path, name="renewed")
        shutil.copyfile(renewed.chain, ca.chain)
        shutil.copyfile(renewed.key, ca.key)
        gw.cli("reload", check=True)
        after = mxtest.wait_for(lambda: (c := peer_cert(aport, ca)) != before and c,
                                mxtest.scaled(10), what="the renewed certificate")
        assert after == ssl.PEM_cert_to_DER_cert(open(renewed.cert).read())
        assert https_get(aport, "/api/info", TOKEN, ctx)[0] == 200
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()


def closed_by_server(s):
    """The server ended the connection: EOF or a reset, nothing pending."""
    s.setblocking(False)
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def http_get(port, path, token):
    """(status, headers, body) of GET path over plain HTTP."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=mxtest.scaled(10))
    try:
        c.request("GET", path, headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        return r.status, r.headers, r.read().decode()
    finally:
        c.close()


@pytest.mark.parametrize("tls", ["yes", "no"])
def test_request_deadline_and_cap(tmp_path, tls):
    """Plain HTTP and HTTPS alike: at most 128 connections, and a request (or
    a TLS handshake) dripped a byte a second is cut off 10 s after the
    accept, although each byte renews evhttp's own per-read timeout."""
    ca = mxtest.make_test_ca(tmp_path)
    aport, mport = mxtest.free_port(), mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"reports": {"ingest": "yes"},
                                          "metrics": {"listen": f"127.0.0.1:{mport}"},
                                          "admin": {"listen": f"127.0.0.1:{aport}",
                                                    "tls": tls, "token": TOKEN}},
                        tls=ca)
    gw.start()
    socks = []
    ctx = mxtest.client_tls_context(ca.ca_cert)

    def get(path):
        return https_get(aport, path, TOKEN, ctx) if tls == "yes" else \
            http_get(aport, path, TOKEN)
    try:
        # 130 connections that never send a whole request: past the cap the
        # gateway closes new ones at once and says so
        socks = [socket.create_connection(("127.0.0.1", aport), timeout=mxtest.scaled(10))
                 for _ in range(130)]
        gw.wait_log(r"admin: 128 connections open, the most allowed")
        for s in socks:
            s.close()
        socks = []
        # the cap is given back as they close: the dashboard answers again
        def answers():
            try:   # closed at once while the guard has not yet reaped them all
                return get("/api/info")[0] == 200
            except (OSError, http.client.HTTPException):
                return False
        mxtest.wait_for(answers, mxtest.scaled(20),
                        what="the dashboard once the connections are gone")
        # a ClientHello or a request dripped a byte every second
        drip = (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 200
                if tls == "yes" else
                b"GET /api/info HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200)
        d = socket.create_connection(("127.0.0.1", aport), timeout=mxtest.scaled(10))
        socks.append(d)
        sent = 0

        def dripped_out():
            nonlocal sent
            if closed_by_server(d):
                return True
            try:
                d.sendall(drip[sent:sent + 1])
            except OSError:
                return True
            sent += 1
            time.sleep(1)
            return False
        mxtest.wait_for(dripped_out, mxtest.scaled(40), what="the dripping client cut off")
        assert sent >= 5, sent   # it was alive, and fed, for a while
        assert get("/api/info")[0] == 200
        from test_reports_inbound import metric
        assert metric(mport, 'mxgate_admin_http_closed_total{reason="request_timeout"}') >= 1
        assert metric(mport, 'mxgate_admin_http_closed_total{reason="max_connections"}') >= 2
    finally:
        for s in socks:
            s.close()
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()


def test_loopback_auto_is_plain_http(tmp_path):
    aport = mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"reports": {"ingest": "yes"},
                                          "admin": {"listen": f"127.0.0.1:{aport}",
                                                    "token": TOKEN}})
    gw.start()
    try:
        c = http.client.HTTPConnection("127.0.0.1", aport, timeout=mxtest.scaled(10))
        c.request("GET", "/api/info", headers={"Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        assert r.status == 200 and "mta_sts_mode" in r.read().decode()
        assert r.headers["Strict-Transport-Security"] is None
        c.close()
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()


PLAIN = "plain HTTP (tls = no) on"
NOCERT = "cert_file and key_file"


@pytest.mark.parametrize("admin,with_cert,bad,why", [
    # tls = no on an address that is not loopback: the listener's line
    (["listen = 192.0.2.80:8026", "tls = no"], True, "listen = 192.0.2.80", PLAIN),
    (["listen = 127.0.0.1:8026", "listen = [2001:db8::8]:8026", "tls = no"], True,
     "listen = [2001:db8::8]", PLAIN),
    (["listen = 0.0.0.0:8026", "tls = no"], False, "listen = 0.0.0.0", PLAIN),
    # auto beyond loopback means HTTPS, which needs the certificate
    (["listen = 192.0.2.80:8026"], False, "listen = 192.0.2.80", NOCERT),
    (["listen = 127.0.0.1:8026", "tls = yes"], False, "tls = yes", NOCERT),
    # fine: explicit plain HTTP, HTTPS with a certificate, loopback
    (["listen = 192.0.2.80:8026", "tls = no", "allow_plain_http = yes"], False, None, None),
    (["listen = 192.0.2.80:8026"], True, None, None),
    (["listen = 127.0.0.1:8026", "listen = [::1]:8027", "tls = no"], False, None, None),
])
def test_check_config_plain_http(tmp_path, admin, with_cert, bad, why):
    lines = base_lines(tmp_path, mxtest.free_port())
    if with_cert:
        ca = mxtest.make_test_ca(tmp_path)
        lines += ["[tls]", f"cert_file = {ca.chain}", f"key_file = {ca.key}", ""]
    lines += ["[admin]", *admin, f"token = {TOKEN}"]
    path = write_conf(tmp_path, lines)
    rc, out = check(path)
    errs = diags(out, path)
    if bad is None:
        assert rc == 0, out
        return
    assert rc != 0, out
    n = line_no(lines, bad)
    assert n in errs, out
    assert any(why in m for m in errs[n]), out
    assert set(errs) == {n}, out   # that line only
