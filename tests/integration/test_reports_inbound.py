"""Reports mailed to the gateway (issue 15), black-box: real DMARC aggregate
and TLS-RPT reports sent over SMTP to the real mxgate with
`[reports] ingest = yes`, then the SQLite store in the queue directory read
back with Python's sqlite3 and the mailbox of the directory route checked.

Covered: the default report addresses (dmarc-reports@ and tlsrpt@ every
accepted domain) and a configured list; gzip, zip (one XML inside, labelled
application/octet-stream), plain XML labelled text/plain, several reports
in one message, application/tlsrpt+gzip and +json; every report message
still gets its 250 and is delivered downstream; a duplicate report is
stored once; a gzip bomb, an XML entity bomb and garbage are refused for
that input only (kept raw in inbound_refused, counted) while the other
reports of the same message are stored; mail to other recipients is not
parsed.
"""

import gzip
import io
import sqlite3
import urllib.request
import zipfile
from email.message import EmailMessage

import mxtest

AGG = """<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>{org}</org_name>
    <email>noreply-dmarc-support@{org}</email>
    <report_id>{rid}</report_id>
    <date_range><begin>1700000000</begin><end>1700086399</end></date_range>
  </report_metadata>
  <policy_published><domain>example.test</domain><adkim>r</adkim><aspf>r</aspf>
    <p>none</p><sp>none</sp><pct>100</pct></policy_published>
  <record>
    <row><source_ip>{ip}</source_ip><count>{count}</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf>
      </policy_evaluated></row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><dkim><domain>example.test</domain><result>pass</result></dkim>
      <spf><domain>bounce.example.test</domain><result>fail</result></spf></auth_results>
  </record>
</feedback>
"""

TLSRPT = ('{"organization-name":"Company-X","date-range":{"start-datetime":'
          '"2026-04-01T00:00:00Z","end-datetime":"2026-04-01T23:59:59Z"},'
          '"contact-info":"sts-reporting@company-x.example","report-id":"%s",'
          '"policies":[{"policy":{"policy-type":"sts","policy-domain":"example.test"},'
          '"summary":{"total-successful-session-count":5326,"total-failure-session-count":303},'
          '"failure-details":[{"result-type":"certificate-expired","failed-session-count":100},'
          '{"result-type":"starttls-not-supported","failed-session-count":203}]}]}')

LAUGHS = ('<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY a "aaaaaaaaaa">'
          '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">'
          '<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
          '<feedback><report_metadata><org_name>&d;</org_name><report_id>l</report_id>'
          '</report_metadata><policy_published><domain>example.test</domain>'
          '</policy_published></feedback>')


def agg(org, rid, ip="192.0.2.10", count=5):
    return AGG.format(org=org, rid=rid, ip=ip, count=count).encode()


def zipped(name, data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return b.getvalue()


def report_mail(rcpt, subject, attachments, marker):
    m = EmailMessage()
    m["From"] = "noreply@reporter.example"
    m["To"] = rcpt
    m["Subject"] = subject
    m["Message-ID"] = f"<{marker}@reporter.example>"
    m.set_content(f"This is an aggregate report. {marker}\n")
    for data, ctype, name in attachments:
        maintype, subtype = ctype.split("/")
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(m).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def metric(port, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def gateway(tmp_path, **reports):
    mport = mxtest.free_port()
    r = {"ingest": "yes"}
    r.update(reports)
    gw = mxtest.Gateway(tmp_path / "gw", {"metrics": {"listen": f"127.0.0.1:{mport}"},
                                          "reports": r})
    gw.metrics_port = mport
    return gw


def query(gw, sql):
    con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_reports_ingested_and_delivered(tmp_path):
    gw = gateway(tmp_path).start()
    try:
        mails = [
            ("dmarc-reports@example.test", "gzip",
             [(gzip.compress(agg("google.com", "g-1")), "application/gzip",
               "google.com!example.test!1700000000!1700086399.xml.gz")]),
            ("DMARC-Reports@Example.TEST", "zip labelled octet-stream",
             [(zipped("r.xml", agg("Yahoo", "y-1", "198.51.100.7", 12)),
               "application/octet-stream", "yahoo.zip")]),
            ("dmarc-reports@example.test", "plain xml labelled text/plain, plus a TLS-RPT",
             [(agg("Mail.ru", "m-1", "2001:db8::25", 1), "text/plain", "report.xml"),
              (gzip.compress((TLSRPT % "t-1").encode()), "application/tlsrpt+gzip",
               "t.json.gz")]),
            ("tlsrpt@example.test", "tlsrpt json",
             [((TLSRPT % "t-2").encode(), "application/tlsrpt+json", "t.json")]),
            # the same report again (a resend): stored once
            ("dmarc-reports@example.test", "duplicate",
             [(gzip.compress(agg("google.com", "g-1")), "application/gzip", "dup.xml.gz")]),
            # hostile parts beside a good one: only they are refused
            ("dmarc-reports@example.test", "bombs",
             [(gzip.compress(b"<feedback>" + b" " * (60 * 1024 * 1024)), "application/gzip",
               "bomb.xml.gz"),
              (LAUGHS.encode(), "text/xml", "laughs.xml"),
              (b"\x1f\x8b garbage", "application/gzip", "broken.gz"),
              (gzip.compress(agg("ok.example", "ok-1")), "application/gzip", "ok.xml.gz")]),
            # not a report address: not parsed at all
            ("user@example.test", "not for ingestion",
             [(gzip.compress(agg("other.example", "o-1")), "application/gzip", "o.xml.gz")]),
        ]
        for i, (rcpt, subject, atts) in enumerate(mails):
            msg = report_mail(rcpt, subject, atts, f"marker-{i}")
            assert gw.send("noreply@reporter.example", [rcpt], msg)   # 250, queued
        # every message is delivered downstream as usual
        gw.wait_for_mailbox(len(mails))
        for i in range(len(mails)):
            assert gw.find_in_mailbox(f"marker-{i}"), i
        mxtest.wait_for(
            lambda: metric(gw.metrics_port, "mxgate_reports_inbound_refused_total") >= 3,
            mxtest.scaled(20), what="the refused parts counted")
        mxtest.wait_for(lambda: metric(gw.metrics_port, "mxgate_reports_inbound_total") >= 6,
                        mxtest.scaled(20), what="six reports stored")
        assert metric(gw.metrics_port, "mxgate_reports_inbound_total") == 6
        assert metric(gw.metrics_port, "mxgate_reports_inbound_refused_total") == 3
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    rows = query(gw, "SELECT org_name, report_id, domain, rcpt FROM inbound_dmarc ORDER BY org_name")
    assert [r[:3] for r in rows] == [("Mail.ru", "m-1", "example.test"),
                                     ("Yahoo", "y-1", "example.test"),
                                     ("google.com", "g-1", "example.test"),
                                     ("ok.example", "ok-1", "example.test")], rows
    recs = query(gw, "SELECT d.org_name, r.source_ip, r.count, r.dkim, r.spf, r.spf_domain "
                     "FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report "
                     "ORDER BY d.org_name")
    assert recs[0] == ("Mail.ru", "2001:db8::25", 1, "pass", "fail", "bounce.example.test")
    assert recs[1] == ("Yahoo", "198.51.100.7", 12, "pass", "fail", "bounce.example.test")
    tls = query(gw, "SELECT t.report_id, p.policy_domain, p.success, p.failure, p.failures "
                    "FROM inbound_tlsrpt t JOIN inbound_tlsrpt_policy p ON p.report = t.id "
                    "ORDER BY t.report_id")
    assert tls == [("t-1", "example.test", 5326, 303,
                    "certificate-expired=100;starttls-not-supported=203"),
                   ("t-2", "example.test", 5326, 303,
                    "certificate-expired=100;starttls-not-supported=203")]
    errors = [r[0] for r in query(gw, "SELECT error FROM inbound_refused ORDER BY error")]
    assert len(errors) == 3, errors
    assert any("over the limit" in e for e in errors), errors
    assert any(e.startswith("dmarc: XML") for e in errors), errors
    assert any(e.startswith("attachment:") and "over the limit" not in e for e in errors), errors
    # the raw message kept once, not once per refused part (red team: 64
    # broken parts made 64 copies of a 20 MB message)
    raw = query(gw, "SELECT count(raw), min(length(raw)) FROM inbound_refused")
    assert raw[0][0] == 1 and raw[0][1] > 1000, raw
    assert query(gw, "SELECT count(*) FROM inbound_dmarc WHERE org_name = 'other.example'") \
        == [(0,)]
    # the same summary in the terminal
    r = gw.cli("reports", "inbound", "--days", "3650", "--domain", "EXAMPLE.test", "--no-rdns")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("DMARC sources")[1].split("\n\n")[0].splitlines()[2:]
    src = [x.split() for x in lines]
    assert [(x[1], x[2], x[3], x[4]) for x in src][:2] == [
        ("198.51.100.7", "-", "12", "100.0%"), ("192.0.2.10", "-", "10", "100.0%")], r.stdout
    assert any(x.split() == ["example.test", "sts", "Company-X", "10652", "606",
                             "certificate-expired=200;starttls-not-supported=406"]
               for x in r.stdout.splitlines()), r.stdout
    assert "example.test: no source approved yet" in r.stdout
    r = gw.cli("reports", "inbound", "--domain", "nothing.test", "--days", "3650")
    assert r.returncode == 0 and r.stdout.count("(none)") == 5, r.stdout


def test_configured_addresses_only(tmp_path):
    gw = gateway(tmp_path, ingest_addresses="rua@example.test").start()
    try:
        for i, rcpt in enumerate(["dmarc-reports@example.test", "rua@example.test"]):
            msg = report_mail(rcpt, "r", [(gzip.compress(agg("org%d" % i, "id%d" % i)),
                                           "application/gzip", "r.xml.gz")], f"m{i}")
            assert gw.send("noreply@reporter.example", [rcpt], msg)
        gw.wait_for_mailbox(2)
        mxtest.wait_for(lambda: metric(gw.metrics_port, "mxgate_reports_inbound_total") >= 1,
                        mxtest.scaled(20), what="one report stored")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
    assert query(gw, "SELECT org_name, rcpt FROM inbound_dmarc") == [("org1", "rua@example.test")]


# --------------------------------------------------------------- dashboard
# (the page in a real browser, the API, PostgreSQL: test_reports_dashboard.py)

def test_dashboard_off_without_token(tmp_path):
    aport = mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"reports": {"ingest": "yes"},
                                          "admin": {"listen": f"127.0.0.1:{aport}"}})
    gw.start()
    try:
        import socket
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", aport)) != 0
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()


# ------------------------------------------------------------ PostgreSQL

def test_inbound_retention(tmp_path):
    """Received reports are deleted inbound_retention after their arrival
    (their rows with them), refused parts and their raw message after 30
    days at most; the postmaster's approvals stay.  Checked at start and
    hourly while reports arrive."""
    gw = gateway(tmp_path, inbound_retention="2d").start()
    try:
        atts = [(agg("google.com", "g-1"), "text/xml", "g.xml"),
                (LAUGHS.encode(), "text/xml", "laughs.xml")]
        assert gw.send("noreply@reporter.example", ["dmarc-reports@example.test"],
                       report_mail("dmarc-reports@example.test", "r", atts, "ret"))
        mxtest.wait_for(lambda: metric(gw.metrics_port, "mxgate_reports_inbound_refused_total")
                        >= 1, mxtest.scaled(20), what="the report handled")
        gw.stop()
        # one day old: kept; then three days old: gone at the next start
        con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
        con.execute("UPDATE inbound_dmarc SET received_t = received_t - 86400")
        con.execute("UPDATE inbound_refused SET t = t - 86400")
        con.execute("INSERT INTO inbound_approved VALUES ('example.test', '192.0.2.10', 1)")
        con.commit()
        con.close()
        gw.restart()
        gw.wait_log(r"queue scheduler: started")
        assert query(gw, "SELECT count(*) FROM inbound_dmarc")[0][0] == 1
        gw.stop()
        con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
        con.execute("UPDATE inbound_dmarc SET received_t = received_t - 2 * 86400")
        con.execute("UPDATE inbound_refused SET t = t - 2 * 86400")
        con.commit()
        con.close()
        gw.restart()
        gw.wait_log(r"reports inbound pruned reports=1 ")
        assert query(gw, "SELECT count(*) FROM inbound_dmarc")[0][0] == 0
        assert query(gw, "SELECT count(*) FROM inbound_dmarc_rec")[0][0] == 0
        assert query(gw, "SELECT count(*) FROM inbound_refused")[0][0] == 0
        assert query(gw, "SELECT count(*) FROM inbound_approved")[0][0] == 1
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()


from test_reports import postgres  # noqa: E402,F401  (the fixture: a real server)


def test_ingest_into_postgresql(tmp_path, postgres):  # noqa: F811
    import subprocess
    mport = mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"metrics": {"listen": f"127.0.0.1:{mport}"},
                                          "reports": {"ingest": "yes", "database": postgres}})
    gw.start()
    try:
        atts = [(gzip.compress(agg("google.com", "g-1", "192.0.2.10", 40)), "application/gzip",
                 "g.xml.gz"),
                ((TLSRPT % "t-1").encode(), "application/tlsrpt+json", "t.json"),
                (LAUGHS.encode(), "text/xml", "laughs.xml"),
                (b"\x1f\x8b garbage", "application/gzip", "broken.gz")]
        for i in range(2):   # the second time: duplicates, stored once
            msg = report_mail("dmarc-reports@example.test", "r", atts, f"pg{i}")
            assert gw.send("noreply@reporter.example", ["dmarc-reports@example.test"], msg)
        mxtest.wait_for(
            lambda: metric(mport, "mxgate_reports_inbound_refused_total") >= 4,
            mxtest.scaled(20), what="both messages handled")
        gw.wait_for_mailbox(2)
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    def psql(sql):
        return subprocess.run(["psql", postgres, "-At", "-c", sql], check=True,
                              capture_output=True, text=True, timeout=30).stdout.strip()
    assert psql("SELECT org_name || '|' || report_id FROM inbound_dmarc") == "google.com|g-1"
    assert psql("SELECT source_ip || '|' || count || '|' || dkim FROM inbound_dmarc_rec") == \
        "192.0.2.10|40|pass"
    assert psql("SELECT policy_domain || '|' || success || '|' || failures "
                "FROM inbound_tlsrpt_policy") == \
        "example.test|5326|certificate-expired=100;starttls-not-supported=203"
    # two refused parts per message, the raw message kept once per message
    n, nraw, rawlen = psql("SELECT count(*) || '|' || count(raw) || '|' || min(length(raw)) "
                           "FROM inbound_refused").split("|")
    assert int(n) == 4 and int(nraw) == 2 and int(rawlen) > 1000, (n, nraw, rawlen)

    # retention, the same in PostgreSQL: aged past the defaults (400 days,
    # 30 for refused parts), gone at the next start
    psql("UPDATE inbound_dmarc SET received_t = received_t - 401 * 86400;"
         "UPDATE inbound_tlsrpt SET received_t = received_t - 401 * 86400;"
         "UPDATE inbound_refused SET t = t - 31 * 86400")
    gw = mxtest.Gateway(tmp_path / "gw2", {"reports": {"ingest": "yes", "database": postgres}})
    gw.start()
    try:
        gw.wait_log(r"reports inbound pruned reports=2 ")
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()
    assert psql("SELECT (SELECT count(*) FROM inbound_dmarc) + (SELECT count(*) FROM"
                " inbound_dmarc_rec) + (SELECT count(*) FROM inbound_tlsrpt) +"
                " (SELECT count(*) FROM inbound_refused)") == "0"
