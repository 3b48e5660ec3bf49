"""The report dashboard (issue 15), black-box: reports mailed over SMTP to
the real mxgate with `[reports] ingest = yes` and `[admin] listen/token`,
then the page driven in a real headless Chromium (Debian's chromium +
chromium-driver through python3-selenium) like a postmaster would: a wrong
token is refused; log in with the token in the form; the sources table and
the chart render with the ingested data (report strings shown as text,
never run); click "approve" and watch the readiness line change; download
the CSV and read the file; "mark as seen" and watch the "new" highlight go;
a later report brings a new source back, highlighted; open the TLS-RPT and
own-verdicts views.  A screenshot of each page goes to build/artifacts/
(docs/postmaster-guide.md links them).

PostgreSQL: the same API (read, approve, mark as seen) and `mxgate reports
inbound` against a real PostgreSQL store (the fixture of test_reports.py).
"""

import csv
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import mxtest
from test_reports import postgres  # noqa: F401  (the fixture: a real server)
from test_reports_inbound import TLSRPT, agg, metric, report_mail, zipped

TOKEN = "s3cret-dashboard-token-0123456789"
XSS_ORG = '<img src=x onerror="document.body.dataset.pwned=1">Evil & Co'
XSS_IP = "<script>document.body.dataset.pwned2=1</script>"
FORMULA_ORG = "=HYPERLINK(1)"
DAY2 = (b"<begin>1700000000</begin><end>1700086399</end>",
        b"<begin>1700086400</begin><end>1700172799</end>")


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def reports_mail():
    """Four DMARC reports over two days and a TLS-RPT report, one message:
    192.0.2.10 passes (40 + 10), 203.0.113.66 fails (7), an XSS "IP" passes."""
    yahoo = agg("Yahoo", "y-1", "192.0.2.10", 10).replace(*DAY2)
    evil = agg(esc(XSS_ORG), "x-1", "203.0.113.66", 7).replace(
        b"<dkim>pass</dkim><spf>fail</spf>", b"<dkim>fail</dkim><spf>fail</spf>")
    mallory = agg(FORMULA_ORG, "x-2", esc(XSS_IP), 1).replace(*DAY2)
    atts = [(gzip.compress(agg("google.com", "g-1", "192.0.2.10", 40)), "application/gzip",
             "g.xml.gz"),
            (yahoo, "text/xml", "y.xml"),
            (zipped("x.xml", evil), "application/zip", "x.zip"),
            (mallory, "text/xml", "m.xml"),
            ((TLSRPT % "t-1").encode(), "application/tlsrpt+json", "t.json")]
    return report_mail("dmarc-reports@example.test", "reports", atts, "dash")


def api(port, what, token, data=None):
    """GET /api/what?days=3650, or POST form data; (status, body)."""
    if data is None:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{what}?days=3650")
    else:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{what}", method="POST",
                                     data=urllib.parse.urlencode(data).encode())
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=mxtest.scaled(10)) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def api_json(port, what):
    code, body = api(port, what, TOKEN)
    assert code == 200, (what, code, body)
    return json.loads(body)


def add_verdicts(insert):
    """mxgate's own verdicts: evaluation rows as [reports] record writes
    them (test_reports.py covers the recording; here only what is shown)."""
    now = int(time.time())
    for dom, disp, dmarc, ov in [("drej.test", "reject", "fail", None)] * 2 + [
            ("dquar.test", "quarantine", "fail", None),
            ("exempt.test", "none", "fail", "local_policy"),
            ("ok.test", "none", "pass", None)]:
        insert(now, dom, dmarc, disp, ov)


VERDICTS = [["dquar.test", "quarantine", "dmarc=fail", "1"],
            ["drej.test", "reject", "dmarc=fail", "2"],
            ["exempt.test", "none", "override local_policy", "1"]]
READY_NONE = ("example.test: no source approved yet - approve your legitimate senders first; "
              "58 messages from sources not approved (7 failing)")
READY_OK = ("example.test: 100.0% of mail from approved sources passes DMARC (50 of 50) - "
            "safe to move to p=quarantine, then p=reject; 8 messages from sources not "
            "approved (7 failing)")


def artifacts():
    d = os.path.join(os.environ.get("MXGATE_BUILD_DIR", "build"), "artifacts")
    os.makedirs(d, exist_ok=True)
    return d


def browser(download_dir):
    """Headless Chromium driven by chromedriver (no network needed)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("python3-selenium not installed (make deps-test)")
    exe, drv = shutil.which("chromium"), shutil.which("chromedriver")
    assert exe and drv, "chromium and chromium-driver needed (make deps-test)"
    opts = Options()
    opts.binary_location = exe
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-dev-shm-usage", "--window-size=1280,800",
              f"--user-data-dir={download_dir}/profile"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(drv), options=opts)
    d.execute_cdp_cmd("Page.setDownloadBehavior",
                      {"behavior": "allow", "downloadPath": str(download_dir)})
    return d


def js(d, script):
    return d.execute_script(script)


def table(d, tid):
    """[class, cell texts...] of each body row of table tid (what is shown)."""
    return js(d, f"return [...document.querySelectorAll('#{tid} tbody tr')]"
                 ".map((tr) => [tr.className, ...[...tr.cells].map((td) => td.textContent)]);")


def until(d, cond, what):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(d, mxtest.scaled(15), poll_frequency=0.05).until(
        lambda _d: cond(), message=what)


def loaded(d):
    """'yes' or 'error' once the page has loaded (or failed to load) its data."""
    def state():
        v = js(d, "return document.body.dataset.loaded")
        return v if v in ("yes", "error") else None
    return until(d, state, "the page loaded")


def shot(d, name):
    """A screenshot of the whole page (not only the window) in build/artifacts/."""
    import base64
    png = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png",
                                                       "captureBeyondViewport": True})
    with open(os.path.join(artifacts(), name), "wb") as f:
        f.write(base64.b64decode(png["data"]))


def inventory(d):
    return js(d, "return [...document.querySelectorAll('#ready li')].map((li) => "
                 "[li.className, li.firstChild.textContent]);")


def test_dashboard_click_through(tmp_path):
    aport, mport = mxtest.free_port(), mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"metrics": {"listen": f"127.0.0.1:{mport}"},
                                          "reports": {"ingest": "yes"},
                                          "admin": {"listen": f"127.0.0.1:{aport}",
                                                    "token": TOKEN}})
    # reverse DNS of the sources: one confirmed name, one name that does not
    # resolve back to its address (shown as "-", never trusted)
    gw.dns.add("10.2.0.192.in-addr.arpa", "PTR", "mail.yahoo-relay.example.")
    gw.dns.add("mail.yahoo-relay.example", "A", "192.0.2.10")
    gw.dns.add("66.113.0.203.in-addr.arpa", "PTR", "mail.bank.example.")
    gw.dns.add("mail.bank.example", "A", "198.51.100.1")
    # example.test publishes the id of the MTA-STS policy mxgate serves
    import re
    recs = gw.cli("dns-records", check=True).stdout
    sts_id = re.search(r'^_mta-sts\.example\.test\.\s.*"v=STSv1; id=(\w+)"', recs, re.M)
    assert sts_id, recs
    sts_id = sts_id.group(1)
    gw.dns.add("_mta-sts.example.test", "TXT", f'"v=STSv1; id={sts_id}"')
    gw.start()
    d = None
    dl = tmp_path / "dl"
    dl.mkdir()
    try:
        assert gw.send("noreply@reporter.example", ["dmarc-reports@example.test"],
                       reports_mail())
        mxtest.wait_for(lambda: metric(mport, "mxgate_reports_inbound_total") >= 5,
                        mxtest.scaled(20), what="five reports stored")
        con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
        add_verdicts(lambda t, dom, dmarc, disp, ov: con.execute(
            "INSERT INTO evaluation (t, source_ip, header_from, dmarc, dkim_aligned,"
            " spf_aligned, policy_domain, disposition, override_type)"
            " VALUES (?, '192.0.2.1', ?, ?, 0, 0, ?, ?, ?)", (t, dom, dmarc, dom, disp, ov)))
        con.commit()
        con.close()

        # the API refuses a missing or wrong token (same length too), reads and writes
        for tok in (None, "wrong", TOKEN[:-1] + "X"):
            assert api(aport, "sources", tok)[0] == 401
            assert api(aport, "approve", tok, {"domain": "example.test", "ip": "192.0.2.10",
                                               "approved": "1"})[0] == 401
            assert api(aport, "seen", tok, {"domain": "example.test"})[0] == 401
        assert api(aport, "seen", TOKEN, {"until": "1"})[0] == 400

        d = browser(dl)
        base = f"http://127.0.0.1:{aport}/"
        # a wrong token: the page shows the refusal and no data
        d.get(base + "#token=nope-nope-nope-nope&days=3650")
        assert loaded(d) == "error"
        assert "401" in js(d, "return document.getElementById('err').textContent")
        assert table(d, "sources") == []
        shot(d, "dashboard-refused.png")

        # log in with the form
        from selenium.webdriver.common.by import By
        d.find_element(By.ID, "token").send_keys(TOKEN)
        d.find_element(By.ID, "show").click()
        assert loaded(d) == "yes", js(d, "return document.getElementById('err').textContent")
        rows = table(d, "sources")
        assert [r[2] for r in rows] == ["192.0.2.10", "203.0.113.66", XSS_IP], rows
        assert rows[0][1:9] == ["example.test", "192.0.2.10", "mail.yahoo-relay.example",
                                "Yahoo,google.com", "50", "100.0%", "0.0%", "100.0%"], rows[0]
        # reverse DNS only forward-confirmed: 203.0.113.66 claims a name that is not its own
        assert [r[3] for r in rows[1:]] == ["-", "-"], rows
        assert rows[0][0] == "new" and rows[1][0] == "fail new", rows   # failing highlighted
        assert rows[1][4] == XSS_ORG and rows[1][6] == "0.0%", rows[1]
        assert [r[10] for r in rows] == ["new"] * 3 and [r[11] for r in rows] == ["approve"] * 3
        # the payloads were shown as text and did not run
        assert js(d, "return [document.body.dataset.pwned, document.body.dataset.pwned2,"
                     " document.querySelectorAll('img, #sources script').length]") == \
            [None, None, 0]
        # the chart: one per domain, a bar pair per day, drawn
        bars = js(d, "return [...document.querySelectorAll('#charts svg rect')].map((r) => "
                     "[r.getAttribute('fill'), Math.round(r.getBBox().height)]);")
        assert [b[0] for b in bars] == ["#e57373", "#81c784"] * 2, bars
        assert bars[0][1] > 0 and bars[1][1] > bars[0][1] and bars[2][1] == 0 \
            and bars[3][1] > 0, bars                     # day 1: 7 of 47 fail; day 2: none
        assert js(d, "return document.querySelectorAll('#charts polyline').length") == 1
        assert js(d, "return document.querySelector('#charts svg').getBoundingClientRect()"
                     ".width") > 500
        assert inventory(d) == [["ready", READY_NONE],
                                ["newsrc", "example.test: 3 new sources since the last look "
                                           "(never marked as seen)"]]
        # a laptop screen: nothing wider than the window
        assert js(d, "return document.documentElement.scrollWidth <= window.innerWidth")
        # nothing from elsewhere (no CDN): every resource came from mxgate
        assert js(d, "return performance.getEntriesByType('resource').every((e) => "
                     "e.name.startsWith(location.origin + '/'))")
        with urllib.request.urlopen(base, timeout=mxtest.scaled(10)) as r:
            csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, csp

        # approve the legitimate source: the readiness line changes
        d.find_element(By.XPATH, "//table[@id='sources']/tbody/tr[td[2]='192.0.2.10']"
                                 "//button").click()
        until(d, lambda: inventory(d)[0] == ["ready", READY_OK], "the readiness line")
        rows = table(d, "sources")
        assert [(r[0], r[11]) for r in rows] == [("", "approved (undo)"), ("fail new", "approve"),
                                                ("new", "approve")], rows

        # the CSV download, read back from the file
        d.find_element(By.ID, "csv").click()
        path = dl / "sources.csv"
        mxtest.wait_for(lambda: path.exists() and path.stat().st_size > 0,
                        mxtest.scaled(15), what="the CSV downloaded")
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
        assert lines[0] == ["domain", "source_ip", "orgs", "count", "dmarc_pass", "spf_pass",
                            "dkim_pass", "approved", "first_seen", "new", "rdns"]
        assert [x[:8] + x[9:] for x in lines[1:]] == [
            ["example.test", "192.0.2.10", "Yahoo,google.com", "50", "50", "0", "50", "1", "0",
             "mail.yahoo-relay.example"],
            ["example.test", "203.0.113.66", XSS_ORG, "7", "0", "0", "0", "0", "1", ""],
            ["example.test", XSS_IP, "'" + FORMULA_ORG, "1", "1", "0", "1", "0", "1", ""]], lines
        assert all(len(x[8]) == 16 for x in lines[1:]), lines   # "YYYY-MM-DD HH:MM"

        # mark as seen: the highlight and the count go
        first_seen = max(r["first_seen"] for r in api_json(aport, "sources"))
        d.find_element(By.CSS_SELECTOR, "li.newsrc button.seen").click()
        until(d, lambda: inventory(d)[1][1].startswith(
            "example.test: 0 new sources since the last look (seen up to "), "marked as seen")
        rows = table(d, "sources")
        assert [r[0] for r in rows] == ["", "fail", ""] and [r[10] for r in rows] == [""] * 3
        assert js(d, "return document.querySelectorAll('li.newsrc button').length") == 0

        # a source first reported after the look is new again (whole seconds)
        mxtest.wait_for(lambda: int(time.time()) > first_seen, mxtest.scaled(3),
                        what="the next second")
        newco = agg("NewCo", "n-1", "198.51.100.99", 3).replace(
            b"<dkim>pass</dkim><spf>fail</spf>", b"<dkim>fail</dkim><spf>fail</spf>")
        assert gw.send("noreply@reporter.example", ["dmarc-reports@example.test"],
                       report_mail("dmarc-reports@example.test", "later",
                                   [(newco, "text/xml", "n.xml")], "later"))
        mxtest.wait_for(lambda: metric(mport, "mxgate_reports_inbound_total") >= 6,
                        mxtest.scaled(20), what="the later report stored")
        d.find_element(By.ID, "show").click()
        until(d, lambda: len(table(d, "sources")) == 4, "the new source shown")
        assert loaded(d) == "yes"
        rows = table(d, "sources")
        assert [(r[2], r[0], r[10]) for r in rows] == [
            ("192.0.2.10", "", ""), ("203.0.113.66", "fail", ""), ("198.51.100.99", "fail new", "new"),
            (XSS_IP, "", "")], rows
        assert inventory(d)[1][1].startswith("example.test: 1 new source since the last look")
        shot(d, "dashboard-sources.png")

        # the TLS-RPT view, with the MTA-STS mode mxgate serves and what
        # each accepted domain's _mta-sts record publishes now
        d.find_element(By.ID, "nav-tlsrpt").click()
        until(d, lambda: d.find_element(By.ID, "tlsrpt").is_displayed(), "the TLS-RPT view")
        assert not d.find_element(By.ID, "sources").is_displayed()
        assert table(d, "tlsrpt") == [["fail", "example.test", "sts", "Company-X", "5326", "303",
                                       "certificate-expired=100;starttls-not-supported=203",
                                       "testing"]]
        assert d.find_element(By.ID, "stsmode").text == \
            "testing (policy for hosting elsewhere: [mta_sts] listen is off)"
        assert js(d, "return [...document.querySelectorAll('#stsdomains li')].map((li) => "
                     "li.textContent)") == [
            f"example.test: not served by mxgate; published (current policy) (id {sts_id})"]
        shot(d, "dashboard-tlsrpt.png")

        # what mxgate itself judged
        d.find_element(By.ID, "nav-verdicts").click()
        until(d, lambda: d.find_element(By.ID, "verdicts").is_displayed(), "the verdicts view")
        assert [r[1:] for r in table(d, "verdicts")] == VERDICTS
        shot(d, "dashboard-verdicts.png")

        # the terminal summary names the sources too (while the DNS server runs)
        r = gw.cli("reports", "inbound", "--days", "3650")
        line = [x for x in r.stdout.splitlines() if " 192.0.2.10 " in x]
        assert line and line[0].split()[2] == "mail.yahoo-relay.example", r.stdout + r.stderr
        line = [x for x in r.stdout.splitlines() if " 203.0.113.66 " in x]
        assert line and line[0].split()[2] == "-", r.stdout
    finally:
        if d is not None:
            d.quit()
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    # the same summary in the terminal
    r = gw.cli("reports", "inbound", "--days", "3650", "--domain", "example.test", "--no-rdns")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert READY_OK.replace("approved (7 failing)", "approved (10 failing)") \
        .replace("8 messages", "11 messages") in out, out
    assert "example.test: 1 new source since the last look (seen up to " in out, out
    src = [x.split() for x in out.split("DMARC sources")[1].split("\n\n")[0].splitlines()[2:]]
    assert [(x[1], x[3], x[4], x[7], x[8]) for x in src] == [
        ("192.0.2.10", "50", "100.0%", "yes", "-"), ("203.0.113.66", "7", "0.0%", "no", "-"),
        ("198.51.100.99", "3", "0.0%", "no", "NEW"), (XSS_IP, "1", "100.0%", "no", "-")], out
    assert "MTA-STS mode mxgate serves: testing" in out, out
    days = out.split("DMARC volume per day")[1].split("\n\n")[0].splitlines()[2:]
    assert [x.split() for x in days] == [["example.test", "2023-11-14", "50", "80.0%"],
                                         ["example.test", "2023-11-15", "11", "100.0%"]], out
    r = gw.cli("reports", "inbound", "--days", "3650", "--no-rdns")
    assert [x.split()[:3] for x in r.stdout.split("itself judged")[1].splitlines()[2:5]] == \
        [["dquar.test", "quarantine", "dmarc=fail"], ["drej.test", "reject", "dmarc=fail"],
         ["exempt.test", "none", "override"]], r.stdout


def test_dashboard_rdns_unanswered_sources(tmp_path):
    """Red team: report sources whose reverse zone never answers (common
    among the bots a DMARC report lists).  A few of them must not cost the
    confirmed names of the others (the PTR round used the whole budget, so
    no name was ever confirmed), and a page of 500 must not stall the SMTP
    side's own lookups (they shared libunbound's worker context: every SPF
    lookup came out temperror for seconds after one view)."""
    aport, mport = mxtest.free_port(), mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"metrics": {"listen": f"127.0.0.1:{mport}"},
                                          "reports": {"ingest": "yes"},
                                          "auth": {"spf": "yes"},
                                          "admin": {"listen": f"127.0.0.1:{aport}",
                                                    "token": TOKEN}})
    gw.dns.blackhole("18.198.in-addr.arpa")      # 198.18.0.0/16: never answers
    gw.dns.add("10.2.0.192.in-addr.arpa", "PTR", "mail.yahoo-relay.example.")
    gw.dns.add("mail.yahoo-relay.example", "A", "192.0.2.10")
    gw.dns.add("spf-ok.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    gw.start()
    try:
        assert gw.send("noreply@reporter.example", ["dmarc-reports@example.test"],
                       reports_mail())
        mxtest.wait_for(lambda: metric(mport, "mxgate_reports_inbound_total") >= 5,
                        mxtest.scaled(20), what="five reports stored")

        def add_sources(ips):   # smaller than 192.0.2.10's 50 messages: asked after it
            con = sqlite3.connect(str(gw.queue_dir / "reports.db"))
            rid = con.execute("SELECT min(id) FROM inbound_dmarc").fetchone()[0]
            con.executemany("INSERT INTO inbound_dmarc_rec (report, source_ip, count)"
                            " VALUES (?, ?, 1)", [(rid, ip) for ip in ips])
            con.commit()
            con.close()

        add_sources([f"198.18.0.{i}" for i in range(1, 11)])
        rows = api_json(aport, "sources")
        rdns = {r["source_ip"]: r["rdns"] for r in rows}
        assert rdns["192.0.2.10"] == "mail.yahoo-relay.example", rdns
        assert rdns["198.18.0.1"] is None and rdns["203.0.113.66"] is None

        # 489 more unanswered sources (not cached yet), then mail right away
        add_sources([f"198.18.{1 + i // 250}.{1 + i % 250}" for i in range(489)])
        rows = api_json(aport, "sources")
        assert len(rows) == 502
        assert [r["rdns"] for r in rows if r["source_ip"] == "192.0.2.10"] == \
            ["mail.yahoo-relay.example"]                  # from the admin thread's cache
        msg, marker = mxtest.make_message(sender="bob@spf-ok.test")
        assert gw.send("bob@spf-ok.test", ["user@example.test"], msg)
        got = []
        mxtest.wait_for(lambda: got.extend(m for m in gw.mailbox_messages()
                                           if marker.encode() in m) or got,
                        mxtest.scaled(20), what="the message delivered")
        ar = mxtest.header_values(got[0], "Authentication-Results")
        assert len(ar) == 1 and "spf=pass" in ar[0], ar
    finally:
        gw.close()


def test_dashboard_on_postgresql(tmp_path, postgres):  # noqa: F811
    """[reports] database = postgresql://...: the dashboard reads and writes
    (approve, mark as seen) the PostgreSQL store, and so does the CLI."""
    aport, mport = mxtest.free_port(), mxtest.free_port()
    gw = mxtest.Gateway(tmp_path / "gw", {"metrics": {"listen": f"127.0.0.1:{mport}"},
                                          "reports": {"ingest": "yes", "database": postgres},
                                          "admin": {"listen": f"127.0.0.1:{aport}",
                                                    "token": TOKEN}})
    gw.start()
    try:
        assert gw.send("noreply@reporter.example", ["dmarc-reports@example.test"],
                       reports_mail())
        mxtest.wait_for(lambda: metric(mport, "mxgate_reports_inbound_total") >= 5,
                        mxtest.scaled(20), what="five reports stored")

        def psql(sql):
            return subprocess.run(["psql", postgres, "-At", "-c", sql], check=True,
                                  capture_output=True, text=True, timeout=30).stdout.strip()
        add_verdicts(lambda t, dom, dmarc, disp, ov: psql(
            "INSERT INTO evaluation (t, source_ip, header_from, dmarc, dkim_aligned,"
            f" spf_aligned, policy_domain, disposition, override_type) VALUES ({t},"
            f" '192.0.2.1', '{dom}', '{dmarc}', 0, 0, '{dom}', '{disp}',"
            f" {repr(ov) if ov else 'NULL'})"))

        rows = api_json(aport, "sources")
        assert [(r["source_ip"], r["count"], r["dmarc_pass"], r["orgs"], r["approved"],
                 r["new"]) for r in rows] == [
            ("192.0.2.10", 50, 50, "Yahoo,google.com", 0, 1),
            ("203.0.113.66", 7, 0, XSS_ORG, 0, 1),
            (XSS_IP, 1, 1, FORMULA_ORG, 0, 1)], rows
        assert api_json(aport, "daily") == [
            {"domain": "example.test", "day": "2023-11-14", "count": 47, "dmarc_pass": 40},
            {"domain": "example.test", "day": "2023-11-15", "count": 11, "dmarc_pass": 11}]
        assert api_json(aport, "tlsrpt") == [
            {"policy_domain": "example.test", "policy_type": "sts", "org": "Company-X",
             "success": 5326, "failure": 303,
             "failures": "certificate-expired=100;starttls-not-supported=203"}]
        assert [[v["domain"], v["disposition"], v["reason"], str(v["count"])]
                for v in api_json(aport, "verdicts")] == VERDICTS
        inv = api_json(aport, "inventory")
        assert [("example.test: " + i["ready"], i["new_sources"], i["seen_t"]) for i in inv] == \
            [(READY_NONE, 3, -1)]

        # writes: approve (twice: an upsert), mark as seen
        for _ in range(2):
            assert api(aport, "approve", TOKEN, {"domain": "example.test",
                                                 "ip": "192.0.2.10", "approved": "1"})[0] == 200
        inv = api_json(aport, "inventory")
        assert ("example.test: " + inv[0]["ready"], inv[0]["new_sources"]) == (READY_OK, 2)
        assert psql("SELECT domain || '|' || source_ip FROM inbound_approved") == \
            "example.test|192.0.2.10"
        first = max(r["first_seen"] for r in api_json(aport, "sources"))
        assert api(aport, "seen", TOKEN, {"domain": "example.test", "until": str(first)})[0] \
            == 200
        # an older mark never moves the look back
        assert api(aport, "seen", TOKEN, {"domain": "example.test", "until": "5"})[0] == 200
        inv = api_json(aport, "inventory")
        assert (inv[0]["new_sources"], inv[0]["seen_t"]) == (0, first), inv
        assert [r["new"] for r in api_json(aport, "sources")] == [0, 0, 0]
        assert psql("SELECT seen_t FROM inbound_seen WHERE domain = 'example.test'") == \
            str(first)
    finally:
        assert gw.stop() in (0, None), gw.log_tail(40)
        gw.close()

    r = gw.cli("reports", "inbound", "--days", "3650", "--no-rdns")
    assert r.returncode == 0, r.stderr
    assert READY_OK in r.stdout, r.stdout
    assert "example.test: 0 new sources since the last look (seen up to " in r.stdout
    assert "Company-X" in r.stdout and "drej.test" in r.stdout
