"""DMARC failure reports (RFC 9991), black-box: real SMTP to the real mxgate
with `[reports] record = yes` and `failure_reports = yes`, a real DNS server
publishing DMARC records with ruf= and fo=, the outbound route pointed at a
loopback MX (the report destination's MX record) where a test SMTP server
collects what mxgate sends.

Covered: a message failing DMARC (refused by p=reject) produces one ARF
report per ruf destination (a `!1k` one skipped: too big), DKIM-verifiable with the report key, from the
null reverse-path, RFC 5965 multipart/report with the header block only
and the recipient local parts redacted; an external ruf destination is
verified like rua (an unverified one skipped with a log line); the
per-domain hourly rate limit suppresses and counts; nothing is sent when
the directive is left at its default, nor for passing mail, a bounce or an
auto-submitted message, nor for an attempt greylisting answered 451.
"""

import email
import email.policy
import re
import subprocess
import urllib.request

import pytest

import dnsserver
import mxtest
from downstream import Downstream, outbound_route

RCPT = "alice.smith@example.test"
RUF_MX = "127.0.0.3"


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = tmp_path_factory.mktemp("failrepdns")
    srv = dnsserver.UnboundServer(d)
    srv.add("mx.ruf.test", "A", RUF_MX)
    # ff.test: p=reject, failure reports to itself and to an external
    # destination that agreed (rufx.test) and one that did not (nov.test)
    srv.add("ff.test", "TXT", "v=spf1 -all")
    srv.add("_dmarc.ff.test", "TXT",
            "v=DMARC1; p=reject; fo=1; ruf=mailto:fr@ff.test, mailto:ext@rufx.test!200k, "
            "mailto:x@nov.test, mailto:tiny@ff.test!1k; rua=mailto:agg@ff.test")
    srv.add("ff.test._report._dmarc.rufx.test", "TXT", "v=DMARC1")
    for dom in ("ff.test", "rufx.test", "nov.test", "rl.test", "ok.test"):
        srv.add(dom, "MX", "10 mx.ruf.test.")
    # rl.test: p=none, reports to itself (the rate limit)
    srv.add("rl.test", "TXT", "v=spf1 -all")
    srv.add("_dmarc.rl.test", "TXT", "v=DMARC1; p=none; ruf=mailto:r@rl.test")
    # ok.test: passes SPF (aligned): no report
    srv.add("ok.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    srv.add("_dmarc.ok.test", "TXT", "v=DMARC1; p=reject; fo=1; ruf=mailto:r@ok.test")
    srv.start()
    yield srv
    srv.close()


def gateway(tmp_path, dns, sink_port, name="gw", sections=None, **reports):
    mport = mxtest.free_port()
    r = {"record": "yes", "email": "dmarc-reports@mx.example.test", "org_name": "Example Gate"}
    r.update(reports)
    extra = {"dns": {"forwarders": dns.forwarder, "timeout": "2s"},
             "auth": {"spf": "yes", "dkim": "yes", "dmarc": "yes"},
             "metrics": {"listen": f"127.0.0.1:{mport}"},
             "reports": r,
             "route outbound": outbound_route(sink_port)}
    extra.update(sections or {})
    gw = mxtest.Gateway(tmp_path / name, extra, dns=False)
    gw.metrics_port = mport
    return gw


def metric(gw, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics",
                                  timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def report_key_record(gw):
    out = subprocess.run([str(mxtest.mxgate_bin()), "dns-records", "-c", str(gw.config_path)],
                         capture_output=True, timeout=30, check=True).stdout.decode()
    for line in out.splitlines():
        if line.startswith("mxgate-reports._domainkey.mx.example.test.\t"):
            return "".join(re.findall(r'"([^"]*)"', line))
    raise AssertionError(out)


def refused(gw, mail_from, msg, rcpts=(RCPT,)):
    with gw.client() as c:
        c.ehlo("client.example.net")
        return c.transaction(mail_from, list(rcpts), msg, expect_queued=False)


def failing_message(sender, **kw):
    headers = ("Cc: \"Bob Jones\" <bob.jones@example.test>",
               "Bcc: hidden@example.test",
               "Received: from relay.example.net by hop.example.net\r\n"
               "\tfor <alice.smith@example.test>; Tue, 2 Dec 2026 10:00:00 +0000")
    return mxtest.make_message(sender=sender, to=RCPT, headers=headers,
                               body="the secret body text\r\n", **kw)


def test_failure_report_sent_signed_redacted(tmp_path, dns):
    import dkim

    sink = Downstream(host=RUF_MX).start()
    gw = gateway(tmp_path, dns, sink.port, failure_reports="yes",
                 failure_report_max_destinations="4").start()
    try:
        keyrec = report_key_record(gw)
        msg, marker = failing_message("billing@ff.test")
        mxtest.assert_reply(refused(gw, "billing@ff.test", msg), 550, "5.7.1")
        mxtest.wait_for(lambda: len(sink.messages) >= 2, mxtest.scaled(20),
                        what="two failure reports at the ruf MX")
        gw.wait_log(r"reports failure domain=ff\.test ruf=x@nov\.test not verified: no "
                    r"ff\.test\._report\._dmarc\.nov\.test record, skipped")
        gw.wait_log(r"reports failure domain=ff\.test ruf=tiny@ff\.test size=\d+ over the limit "
                    r"1024, skipped")
        mxtest.wait_for(lambda: metric(gw, 'mxgate_reports_failure_total{result="queued"}')
                        >= 2, mxtest.scaled(10), what="two queued")
        assert metric(gw, 'mxgate_reports_failure_total{result="unverified"}') == 1
        assert metric(gw, 'mxgate_reports_failure_total{result="too_big"}') == 1
        # a message that passes DMARC (aligned SPF) is not reported on
        ok, _ = mxtest.make_message(sender="a@ok.test", to=RCPT)
        gw.send("a@ok.test", [RCPT], ok)
        # nor a bounce (null reverse-path) or an auto-submitted message
        bounce, _ = failing_message("mailer-daemon@ff.test")
        mxtest.assert_reply(refused(gw, "", bounce), 550, "5.7.1")
        auto, _ = failing_message("auto@ff.test")
        auto = b"Auto-Submitted: auto-replied\r\n" + auto
        mxtest.assert_reply(refused(gw, "auto@ff.test", auto), 550, "5.7.1")
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 4,
                        mxtest.scaled(10), what="four evaluations recorded")
        assert metric(gw, 'mxgate_reports_failure_total{result="not_reported"}') == 2
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    # the two reports, and only them (ok.test, the bounce and the
    # auto-submitted message produced none)
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["ext@rufx.test", "fr@ff.test"], \
        [m.rcpt_tos for m in sink.messages]
    for rec in sink.messages:
        raw = rec.data if isinstance(rec.data, bytes) else rec.data.encode()
        assert rec.mail_from in ("", "<>")  # the null reverse-path: never bounced
        assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: keyrec.encode())
        # header block only, recipients redacted, Bcc dropped
        for secret in (b"alice", b"Alice", b"bob.jones", b"Bob Jones", b"hidden",
                       b"secret body"):
            assert secret not in raw, (secret, raw.decode())
        m = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert m.get_content_type() == "multipart/report"
        assert m.get_param("report-type") == "feedback-report"
        assert m["Auto-Submitted"] == "auto-generated"
        assert m["Subject"].startswith("FW: test " + marker), m["Subject"]
        parts = m.get_payload()
        assert [p.get_content_type() for p in parts] == [
            "text/plain", "message/feedback-report", "text/rfc822-headers"]
        fb = {}
        rcpt_to = []
        for block in parts[1].get_payload():
            for k, v in block.items():
                fb[k.lower()] = " ".join(v.split())
                if k.lower() == "original-rcpt-to":
                    rcpt_to.append(v)
        assert fb["feedback-type"] == "auth-failure"
        assert fb["auth-failure"] == "dmarc"
        assert fb["reported-domain"] == "ff.test"
        assert fb["source-ip"] == "127.0.0.1"
        assert fb["identity-alignment"] == "dkim, spf"
        assert fb["delivery-result"] == "reject"
        assert fb["original-mail-from"] == "<billing@ff.test>"
        assert "dmarc=fail" in fb["authentication-results"]
        assert "arrival-date" in fb
        # RFC 9991 4: SPF failed for an aligned identifier: the record used
        assert fb["spf-dns"] == 'txt : ff.test : "v=spf1 -all"', fb.get("spf-dns")
        assert len(rcpt_to) == 1 and re.fullmatch(r"<[0-9a-f]{12}@example\.test>", rcpt_to[0])
        token = rcpt_to[0][1:-1]
        hdrs = parts[2].get_payload()
        assert f"To: <{token}>" in hdrs
        assert f"for <{token}>;" in hdrs  # the Received for clause, folding kept
        assert "Subject: test " + marker in hdrs
        assert "From: <billing@ff.test>" in hdrs


def test_failure_reports_rate_limited(tmp_path, dns):
    sink = Downstream(host=RUF_MX).start()
    gw = gateway(tmp_path, dns, sink.port, failure_reports="yes",
                 failure_report_rate="2").start()
    try:
        for _ in range(5):
            msg, _ = mxtest.make_message(sender="x@rl.test", to=RCPT)
            gw.send("x@rl.test", [RCPT], msg)
        mxtest.wait_for(lambda: metric(gw, 'mxgate_reports_failure_total{result="queued"}')
                        >= 2, mxtest.scaled(20), what="two reports queued")
        assert metric(gw, 'mxgate_reports_failure_total{result="rate_limited"}') == 3
        gw.wait_log(r"reports failure rate limit reached domain=rl\.test limit=2/h")
        assert gw.log_text().count("reports failure rate limit reached") == 1
        mxtest.wait_for(lambda: len(sink.messages) >= 2, mxtest.scaled(20),
                        what="two reports delivered")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert [m.rcpt_tos for m in sink.messages] == [["r@rl.test"], ["r@rl.test"]]


def test_greylisted_attempt_not_reported(tmp_path, dns):
    """A 451 (greylisting) is no verdict: the sender comes again and is
    judged again.  Each greylisted attempt used to make one more failure
    report (and aggregate row): with a rate of 1 an hour, the accepted retry
    found the hour's report spent."""
    sink = Downstream(host=RUF_MX).start()
    gw = gateway(tmp_path, dns, sink.port, failure_reports="yes", failure_report_rate="1",
                 sections={"greylist": {"enabled": "yes", "delay": "1s"}}).start()
    try:
        msg, marker = mxtest.make_message(sender="x@rl.test", to=RCPT)
        mxtest.assert_reply(refused(gw, "x@rl.test", msg), 451, "4.7.1")

        def accepted():
            return refused(gw, "x@rl.test", msg).code == 250
        mxtest.wait_for(accepted, mxtest.scaled(15), interval=0.5, what="the retry accepted")
        # the submission is made before the 250: nothing was rate limited
        assert metric(gw, 'mxgate_reports_failure_total{result="rate_limited"}') == 0
        mxtest.wait_for(lambda: len(sink.messages) >= 1, mxtest.scaled(20),
                        what="the failure report")
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 1,
                        mxtest.scaled(10), what="the evaluation recorded")
        assert metric(gw, "mxgate_reports_recorded_total") == 1   # not the 451 too
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert [m.rcpt_tos for m in sink.messages] == [["r@rl.test"]]
    assert marker in (sink.messages[0].data if isinstance(sink.messages[0].data, str)
                      else sink.messages[0].data.decode())


def test_failure_reports_off_by_default(tmp_path, dns):
    sink = Downstream(host=RUF_MX).start()
    gw = gateway(tmp_path, dns, sink.port).start()
    try:
        msg, _ = failing_message("billing@ff.test")
        mxtest.assert_reply(refused(gw, "billing@ff.test", msg), 550, "5.7.1")
        mxtest.wait_for(lambda: metric(gw, "mxgate_reports_recorded_total") >= 1,
                        mxtest.scaled(10), what="the evaluation recorded")
        # the aggregate report of the same evaluation goes to the same MX:
        # once it is there, a failure report made at the verdict would be too
        r = subprocess.run([str(mxtest.mxgate_bin()), "reports", "send-now", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        mxtest.wait_for(lambda: len(sink.messages) >= 1, mxtest.scaled(20),
                        what="the aggregate report")
        gw.wait_log(r"reports queued report_id=\w+ to=<agg@ff\.test>")
        assert "reports failure" not in gw.log_text()
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
        sink.stop()
    assert [m.rcpt_tos for m in sink.messages] == [["agg@ff.test"]]


def test_failure_reports_need_record(tmp_path, dns):
    gw = gateway(tmp_path, dns, 2525, record="no", failure_reports="yes")
    try:
        r = subprocess.run([str(mxtest.mxgate_bin()), "check-config", "-c",
                            str(gw.config_path)], capture_output=True, timeout=30)
        assert r.returncode != 0
        assert b"failure_reports = yes needs record = yes" in r.stdout + r.stderr
    finally:
        gw.close()
